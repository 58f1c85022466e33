import Foundation
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

/// The child relays linked to this node (root or relay), for `/admin/topology`.
public final class RelayLinks: Sendable {
    public struct Link: Sendable {
        public var id: String
        public var user: String
        public var lz4: Bool
        public var smuxVersion: UInt8
        public var since: Date
        /// The link's token (a revocation of it cuts the link), and how to reach the child.
        var tokenID: Int64?
        var control: ControlChannel?
        var session: MuxSession?
    }

    private let state = Mutex<(next: UInt64, links: [UInt64: Link])>((0, [:]))

    public init() {}

    /// Records a link; returns the key to `remove` it with.
    func add(_ link: Link) -> UInt64 {
        state.withLock { state in
            state.next += 1
            state.links[state.next] = link
            return state.next
        }
    }

    func remove(_ key: UInt64) {
        state.withLock { _ = $0.links.removeValue(forKey: key) }
    }

    public var all: [Link] { state.withLock { Array($0.links.values) } }
}

/// What a node sees of its chain: itself, its upstream link (relays only) and the tree below
/// it (workers, and relays with their subtrees, built from each worker's `via` list).
public struct Topology: Encodable, Sendable {
    public struct Upstream: Encodable, Sendable {
        public var url: String
        /// "connected" or "reconnecting".
        public var state: String
        /// This node's path from the root, itself last.
        public var path: [String]
        /// The link's details while connected.
        public var parent: String?
        public var lz4: Bool?
        public var smux: Int?
        public var connectedSeconds: Int?
        public var reconnects = 0
        public var lastError: String?
        /// The last measured round trip over the link's control stream (`ping`).
        public var rttMilliseconds: Double?
        /// Plain bytes per wire byte on this connection, both ways (1 without LZ4), and the totals.
        public var lz4Ratio: Double?
        public var wireBytes: UInt64?
        public var plainBytes: UInt64?

        public init(url: String, state: String, path: [String]) {
            self.url = url
            self.state = state
            self.path = path
        }

        enum CodingKeys: String, CodingKey {
            case url, state, parent, path, lz4, smux, reconnects
            case connectedSeconds = "connected_seconds"
            case lastError = "last_error"
            case rttMilliseconds = "rtt_ms"
            case lz4Ratio = "lz4_ratio"
            case wireBytes = "wire_bytes"
            case plainBytes = "plain_bytes"
        }
    }

    /// A worker or a relay below this node.
    public struct Node: Encodable, Sendable {
        var kind: String
        var id: String
        var user: String?
        var models: [String]?
        var inFlight: Int?
        var hardwareInfo: JSONValue?
        var hops: Int
        var lz4: Bool?
        var smux: Int?
        var children: [Node]?

        enum CodingKeys: String, CodingKey {
            case kind, id, user, models, hops, lz4, smux, children
            case inFlight = "in_flight"
            case hardwareInfo = "hardware_info"
        }
    }

    public var node: String
    public var role: String
    public var upstream: Upstream?
    public var children: [Node]

    /// The tree from the registry's workers (each filed under the relays of its `via` list)
    /// and this node's direct relay links (shown even with no worker behind them).
    public static func build(node: String, role: String, upstream: Upstream?, workers: [WorkerConnection], relays: [RelayLinks.Link]) -> Topology {
        final class Branch {
            var relays: [String: Branch] = [:]
            var workers: [Node] = []
        }
        let root = Branch()
        for worker in workers {
            var branch = root
            for relay in worker.via {
                if branch.relays[relay] == nil { branch.relays[relay] = Branch() }
                branch = branch.relays[relay]!
            }
            branch.workers.append(Node(kind: "worker", id: worker.namespace, user: worker.principal.userName, models: worker.models.sorted(),
                                       inFlight: worker.load, hardwareInfo: worker.hardwareInfo?.value, hops: worker.via.count, lz4: nil, smux: nil, children: nil))
        }
        let direct = Dictionary(relays.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        for id in direct.keys where root.relays[id] == nil { root.relays[id] = Branch() }
        func nodes(_ branch: Branch, depth: Int) -> [Node] {
            let workers = branch.workers.sorted { $0.id < $1.id }
            let relays = branch.relays.keys.sorted().map { id -> Node in
                let link = depth == 0 ? direct[id] : nil
                return Node(kind: "relay", id: id, user: link?.user, models: nil, inFlight: nil, hardwareInfo: nil, hops: depth + 1,
                            lz4: link?.lz4, smux: link.map { Int($0.smuxVersion) }, children: nodes(branch.relays[id]!, depth: depth + 1))
            }
            return workers + relays
        }
        return Topology(node: node, role: role, upstream: upstream, children: nodes(root, depth: 0))
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }
}
