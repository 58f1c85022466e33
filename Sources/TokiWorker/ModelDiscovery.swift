// Parsing of backend model lists (OpenAI `/v1/models`, Ollama `/api/tags`).

import Foundation

public enum ModelDiscovery {
    /// Path of the OpenAI-compatible model list.
    public static let openAIModelsPath = "/v1/models"
    /// Path of Ollama's model list.
    public static let ollamaTagsPath = "/api/tags"

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    private struct OpenAIList: Decodable {
        struct Entry: Decodable { var id: String? }
        var data: [Entry]?
    }

    private struct OllamaList: Decodable {
        struct Entry: Decodable {
            var name: String?
            var model: String?
        }
        var models: [Entry]?
    }

    /// `{"data":[{"id":…}]}` → sorted, deduplicated, trimmed, non-empty ids.
    public static func parseOpenAIModels(_ data: Data) throws -> [String] {
        let list: OpenAIList
        do { list = try JSONDecoder().decode(OpenAIList.self, from: data) } catch {
            throw ParseError(description: "invalid /v1/models response: \(error)")
        }
        guard let entries = list.data else { throw ParseError(description: "no \"data\" array in /v1/models response") }
        return normalize(entries.compactMap(\.id))
    }

    /// `{"models":[{"name":…}]}` → sorted, deduplicated, trimmed, non-empty names (`model` used
    /// when `name` is missing).
    public static func parseOllamaTags(_ data: Data) throws -> [String] {
        let list: OllamaList
        do { list = try JSONDecoder().decode(OllamaList.self, from: data) } catch {
            throw ParseError(description: "invalid /api/tags response: \(error)")
        }
        guard let entries = list.models else { throw ParseError(description: "no \"models\" array in /api/tags response") }
        return normalize(entries.compactMap { $0.name ?? $0.model })
    }

    /// Accepts either shape.
    public static func parseModelList(_ data: Data) throws -> [String] {
        if let ids = try? parseOpenAIModels(data) { return ids }
        if let names = try? parseOllamaTags(data) { return names }
        throw ParseError(description: "response is neither an OpenAI model list nor Ollama tags")
    }

    public static func normalize(_ names: [String]) -> [String] {
        Array(Set(names.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty })).sorted()
    }
}
