import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore

/// `toki status`: the chain as a node sees it (`GET /admin/topology`), printed as a tree.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a hub's or relay's upstream link and the workers and relays below it.",
        discussion: "A hub wants an admin token; a relay wants the token it was started with."
    )

    @Option(name: .long, help: "The node's base URL (a hub, or a relay's --listen address).")
    var hub = "http://127.0.0.1:8080"

    /// The hub's admin token, or the relay's own.
    @OptionGroup var token: TokenOption

    @Flag(name: .long, help: "Print the raw JSON.")
    var json = false

    func run() async throws {
        let token = try self.token.required(for: "a hub's admin token or a relay's own token")
        let base = hub.hasSuffix("/") ? String(hub.dropLast()) : hub
        var request = HTTPClientRequest(url: base + "/admin/topology")
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let (status, body): (UInt, ByteBuffer)
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            (status, body) = (response.status.code, try await response.body.collect(upTo: 16 << 20))
        }
        guard status == 200 else {
            throw ValidationError("\(base)/admin/topology answered \(status): \(String(buffer: body).prefix(300))")
        }
        if json {
            print(String(buffer: body))
            return
        }
        guard let topology = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
            throw ValidationError("unexpected answer: \(String(buffer: body).prefix(300))")
        }
        print(Self.render(topology), terminator: "")
    }

    /// The tree, one line per node.
    static func render(_ topology: [String: Any]) -> String {
        var out = "\(topology["role"] as? String ?? "node") \(topology["node"] as? String ?? "?")\n"
        if let up = topology["upstream"] as? [String: Any] {
            var line = "  upstream \(up["url"] as? String ?? "?"): \(up["state"] as? String ?? "?")"
            if let parent = up["parent"] as? String { line += ", parent \(parent)" }
            if let path = up["path"] as? [String] { line += ", path \(path.joined(separator: " <- "))" }
            if let lz4 = up["lz4"] as? Bool { line += lz4 ? ", lz4" : ", no lz4" }
            if let smux = up["smux"] as? Int { line += ", smux v\(smux)" }
            if let seconds = up["connected_seconds"] as? Int { line += ", up \(seconds) s" }
            if let rtt = up["rtt_ms"] as? Double { line += ", rtt \(String(format: "%.1f", rtt)) ms" }
            if let ratio = up["lz4_ratio"] as? Double { line += ", lz4 ratio \(String(format: "%.2f", ratio))" }
            line += ", \(up["reconnects"] as? Int ?? 0) reconnects"
            if let error = up["last_error"] as? String, up["state"] as? String != "connected" { line += " (last: \(error))" }
            out += line + "\n"
        }
        func walk(_ nodes: [[String: Any]], indent: String) {
            for (index, node) in nodes.enumerated() {
                let last = index == nodes.count - 1
                let branch = indent + (last ? "└─ " : "├─ ")
                let kind = node["kind"] as? String ?? "?"
                var line = "\(branch)\(kind) \(node["id"] as? String ?? "?")"
                if let user = node["user"] as? String { line += "  user \(user)" }
                if let models = node["models"] as? [String] { line += "  models \(models.joined(separator: ", "))" }
                if let inFlight = node["in_flight"] as? Int { line += "  in flight \(inFlight)" }
                if let hardware = node["hardware_info"], let data = try? JSONSerialization.data(withJSONObject: hardware, options: [.sortedKeys, .fragmentsAllowed]) {
                    line += "  hardware \(String(decoding: data, as: UTF8.self))"
                }
                if kind == "worker", let hops = node["hops"] as? Int, hops > 0 { line += "  (\(hops) relay hop\(hops == 1 ? "" : "s"))" }
                if let lz4 = node["lz4"] as? Bool { line += lz4 ? "  lz4" : "  no lz4" }
                if let smux = node["smux"] as? Int { line += "  smux v\(smux)" }
                out += line + "\n"
                walk(node["children"] as? [[String: Any]] ?? [], indent: indent + (last ? "   " : "│  "))
            }
        }
        let children = topology["children"] as? [[String: Any]] ?? []
        if children.isEmpty { out += "  (no workers)\n" }
        walk(children, indent: "")
        return out
    }
}
