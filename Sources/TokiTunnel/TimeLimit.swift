/// Runs `body` with a time limit: its result, or nil if `limit` passed first. Then `onTimeout`
/// runs (use it to close what the body waits on), and the body is cancelled and awaited.
/// Shared by the tunnel dialler, the hub and the worker.
public func withTimeLimit<T: Sendable>(_ limit: Duration, onTimeout: @escaping @Sendable () -> Void = {},
                                       _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        let first = try await group.next() ?? nil
        if first == nil { onTimeout() }
        return first
    }
}
