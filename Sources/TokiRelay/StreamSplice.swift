import NIOCore
import TokiMux

/// Joins two mux streams: what one side sends is written to the other, both ways, with the
/// streams' own back-pressure (a write waits while the far side's window or queue is full, and
/// nothing more is read meanwhile). A FIN is passed on as a FIN; when either side fails, or
/// both directions have ended, both streams are closed. Bytes are handed over as received:
/// nothing is parsed or copied.
enum StreamSplice {
    /// - Parameter first: bytes of `a` already read (what followed a relay's route line).
    static func run(_ a: MuxStream, _ b: MuxStream, first: ByteBuffer? = nil) async {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await pump(from: a, to: b, first: first) }
            group.addTask { await pump(from: b, to: a, first: nil) }
            // A direction that failed ends the other at once; a clean FIN lets it finish.
            for await clean in group where !clean {
                a.close()
                b.close()
                group.cancelAll()
            }
        }
        a.close()
        b.close()
    }

    /// Copies until `source` ends (true: a clean FIN, passed on) or fails (false).
    private static func pump(from source: MuxStream, to sink: MuxStream, first: ByteBuffer?) async -> Bool {
        do {
            if let first, first.readableBytes > 0 { try await sink.write(first) }
            while let chunk = try await source.read() {
                try await sink.write(chunk)
            }
            sink.closeWrite()
            return true
        } catch {
            return false
        }
    }
}
