import Foundation
import Logging
import TokiStore

let quietLogger = Logger(label: "toki.store.tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// Runs `body` with a fresh temporary directory path (not yet created) and removes it afterwards.
func withTempDataDir<T>(_ body: (String) async throws -> T) async throws -> T {
    let base = FileManager.default.temporaryDirectory
        .appendingPathComponent("toki-store-tests-\(UUID().uuidString)", isDirectory: true)
    defer { try? FileManager.default.removeItem(at: base) }
    return try await body(base.appendingPathComponent("data", isDirectory: true).path)
}

func posixMode(_ path: String) throws -> Int {
    let attrs = try FileManager.default.attributesOfItem(atPath: path)
    return (attrs[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

extension Data {
    func contains(_ needle: String) -> Bool {
        range(of: Data(needle.utf8)) != nil
    }
}
