// The worker's current model list: configured `model_targets`, plus the models discovered from
// each bare `--backend` (OpenAI `/v1/models`, falling back to Ollama `/api/tags`).

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Synchronization
import TokiProtocol
import TokiTunnel

/// What the worker serves right now. Replaced as a whole when discovery finds a change.
public struct ModelSnapshot: Sendable {
    /// Bumped on every change.
    public var version: Int
    /// The effective configuration: `modelTargets` = configured targets + discovered ones.
    public var config: TokiameConfig
    /// Resolves `TunnelRequest.model` against `config` (rebuilt on each change, so API-key
    /// round-robin positions restart then).
    public var resolver: TargetResolver
    /// Sorted public model names.
    public var models: [String] { config.modelNames }
}

/// Holds the model snapshot and wakes waiters when it changes.
final class ModelCatalog: Sendable {
    let base: TokiameConfig
    private let state: Mutex<(snapshot: ModelSnapshot, discovered: [String: [String]])>
    let changes = ChangeSignal()

    init(base: TokiameConfig) {
        self.base = base
        let snapshot = ModelSnapshot(version: 0, config: base, resolver: TargetResolver(config: base))
        self.state = Mutex((snapshot, [:]))
    }

    var snapshot: ModelSnapshot { state.withLock { $0.snapshot } }

    /// Records what `backend` lists. Configured targets win over discovered names. Returns true
    /// if the model set changed.
    @discardableResult
    func update(backend: String, models: [String]) -> Bool {
        let changed = state.withLock { state -> Bool in
            var discovered = state.discovered
            discovered[backend] = models
            var config = base
            // Deterministic: backends in sorted order, first backend listing a name wins.
            for backendURL in discovered.keys.sorted() {
                for name in discovered[backendURL] ?? [] where config.modelTargets[name] == nil {
                    config.modelTargets[name] = ModelTargetConfig(url: backendURL)
                }
            }
            state.discovered = discovered
            guard config.modelTargets != state.snapshot.config.modelTargets else { return false }
            state.snapshot = ModelSnapshot(version: state.snapshot.version + 1, config: config,
                                           resolver: TargetResolver(config: config))
            return true
        }
        if changed { changes.bump() }
        return changed
    }
}

public enum ModelDiscoveryError: Error, CustomStringConvertible {
    case failed(backend: String, reasons: [String])
    public var description: String {
        switch self {
        case .failed(let backend, let reasons):
            "cannot list models of \(backend): \(reasons.joined(separator: "; "))"
        }
    }
}

extension ModelDiscovery {
    /// Largest model-list response read.
    static let maxListBytes = 8 << 20

    /// Lists the models of an OpenAI-compatible backend (`/v1/models`), falling back to
    /// Ollama's `/api/tags`. Only ever requests URLs under `backend`.
    static func discover(backend: String, client: HTTPClient, timeout: Duration, logger: Logger) async throws -> [String] {
        var reasons: [String] = []
        for (path, parse) in [(openAIModelsPath, parseOpenAIModels), (ollamaTagsPath, parseOllamaTags)] {
            do {
                let url = try mergeTargetURL(target: backend, requestPath: path)
                var request = HTTPClientRequest(url: url)
                request.method = .GET
                request.headers.add(name: "Accept", value: "application/json")
                let response = try await client.execute(request, timeout: .nanoseconds(Int64(timeout.seconds * 1e9)), logger: logger)
                let body = try await response.body.collect(upTo: maxListBytes)
                guard response.status.code == 200 else {
                    reasons.append("\(path): HTTP \(response.status.code)")
                    continue
                }
                return try parse(Data(body.readableBytesView))
            } catch {
                reasons.append("\(path): \(error)")
            }
        }
        throw ModelDiscoveryError.failed(backend: backend, reasons: reasons)
    }
}
