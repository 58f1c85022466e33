// Which OpenAI requests the hub tunnels, and as which route kind (spec §6.6).

import TokiProtocol

extension RouteKind {
    /// Fixed-path routes: OpenAI path → route kind (all POST).
    public static let pathTable: [(path: String, kind: RouteKind)] = [
        ("/v1/chat/completions", .chatCompletions),
        ("/v1/completions", .completions),
        ("/v1/responses", .responses),
        ("/v1/embeddings", .embeddings),
        ("/v1/rerank", .rerank),
        ("/v1/audio/speech", .audioSpeech),
        ("/v1/audio/transcriptions", .audioTranscription),
        ("/v1/audio/translations", .audioTranslation),
        ("/v1/images/generations", .imagesGenerations),
        ("/v1/images/edits", .imagesEdits),
        ("/v1/images/variations", .imagesVariations),
        ("/v1/videos", .videosCreate),
    ]

    /// The route kind of an OpenAI request, or nil when the path is not tunnelled
    /// (e.g. `/v1/models`). The query string is ignored. Video ids: `GET /v1/videos/<id>` →
    /// `videos_get`, `GET /v1/videos/<id>/content` → `videos_content`.
    public init?(path rawPath: String, method: String = "POST") {
        var path = Substring(rawPath)
        if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<q] }
        while path.count > 1, path.hasSuffix("/") { path = path.dropLast() }
        let m = method.uppercased()
        if m == "GET" {
            let segments = path.split(separator: "/", omittingEmptySubsequences: true)
            if segments.count == 3, segments[0] == "v1", segments[1] == "videos" {
                self = .videosGet
                return
            }
            if segments.count == 4, segments[0] == "v1", segments[1] == "videos", segments[3] == "content" {
                self = .videosContent
                return
            }
            return nil
        }
        guard m == "POST", let hit = RouteKind.pathTable.first(where: { $0.path == path }) else { return nil }
        self = hit.kind
    }
}
