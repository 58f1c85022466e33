// Control-stream line decoder (ControlMessage.decode(line:)) and the JSONValue it uses for
// `hardware_info`, on arbitrary bytes.
//
// Invariants:
//  - decoding throws only JSONReadError;
//  - round trip: a decoded message re-encodes (writeLine) to one NDJSON line of valid JSON,
//    which decodes to the same message (an ack without an ack object gains the empty one
//    that is always written), and re-encoding that gives the same bytes (fixed point);
//  - JSONValue: decode -> jsonString -> decode gives the same value, and jsonString is stable;
//  - the relay extension's RelayMessage (same reader, same input): throws only JSONReadError,
//    and a decoded message round-trips to the same message and the same bytes.
import Foundation
import FuzzSupport
import NIOCore
import TokiProtocol

/// What a message looks like after one trip over the wire.
func normalized(_ message: ControlMessage) -> ControlMessage {
    var m = message
    if m.type == .ack, m.ack == nil { m.ack = AckPayload() }
    return m
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let line = ByteBuffer(bytes: bytes)

    do {
        let message = try ControlMessage.decode(line: line)
        let wire = message.encodedLine()
        let view = wire.readableBytesView
        check(view.last == 0x0A && view.dropLast().allSatisfy { $0 != 0x0A && $0 != 0x0D },
              "encoded control message is not one line: \(String(buffer: wire))")
        // hardware_info travels as raw JSON, so an unpaired surrogate escape goes through as
        // Go's encoder would let it; Foundation rejects those, so they skip this one check.
        check(hasSurrogateEscape(view) || (try? JSONSerialization.jsonObject(with: Data(view))) is [String: Any],
              "encoded control message is not a JSON object: \(String(buffer: wire))")
        let again: ControlMessage
        do {
            again = try ControlMessage.decode(line: wire)
        } catch {
            check(false, "re-encoded control message does not decode: \(error)\n\(String(buffer: wire))")
            return 0
        }
        check(again == normalized(message), "round trip changed the message:\n\(message)\n\(again)\n\(String(buffer: wire))")
        check(again.encodedLine() == wire, "encoding is not a fixed point:\n\(String(buffer: wire))\n\(String(buffer: again.encodedLine()))")
    } catch is JSONReadError {
        // Not a control message.
    } catch {
        check(false, "ControlMessage.decode threw \(error)")
    }

    do {
        let relay = try RelayMessage.decode(line: line)
        let wire = relay.encodedLine()
        do {
            let again = try RelayMessage.decode(line: wire)
            check(again == relay, "relay round trip changed the message:\n\(relay)\n\(again)\n\(String(buffer: wire))")
            check(again.encodedLine() == wire, "relay encoding is not a fixed point:\n\(String(buffer: wire))")
        } catch {
            check(false, "re-encoded relay message does not decode: \(error)\n\(String(buffer: wire))")
        }
    } catch is JSONReadError {
        // Not a relay message.
    } catch {
        check(false, "RelayMessage.decode threw \(error)")
    }

    if let value = try? JSONValue(jsonBytes: bytes) {
        let text = value.jsonString
        do {
            let again = try JSONValue(jsonBytes: Array(text.utf8))
            check(again == value, "JSONValue round trip changed the value:\n\(value)\n\(again)\n\(text)")
            check(again.jsonString == text, "JSONValue.jsonString is not a fixed point: \(text)")
        } catch {
            check(false, "JSONValue.jsonString is not valid JSON: \(error)\n\(text)")
        }
    }
    return 0
}

runLibFuzzer(fuzz)
