import Testing
import TokiHub
import TokiProtocol

@Suite struct OpenAIPathsTests {
    @Test func routeKinds() {
        #expect(RouteKind(path: "/v1/chat/completions") == .chatCompletions)
        #expect(RouteKind(path: "/v1/chat/completions?x=1") == .chatCompletions)
        #expect(RouteKind(path: "/v1/audio/transcriptions") == .audioTranscription)
        #expect(RouteKind(path: "/v1/images/variations") == .imagesVariations)
        #expect(RouteKind(path: "/v1/videos") == .videosCreate)
        #expect(RouteKind(path: "/v1/videos/abc", method: "GET") == .videosGet)
        #expect(RouteKind(path: "/v1/videos/abc/content", method: "GET") == .videosContent)
        #expect(RouteKind(path: "/v1/models", method: "GET") == nil)
        #expect(RouteKind(path: "/v1/models") == nil)
        #expect(RouteKind.videosContent.method == "GET")
        #expect(RouteKind.allCases.count == 14)
        for (path, kind) in RouteKind.pathTable { #expect(RouteKind(path: path, method: kind.method) == kind) }
    }
}
