/// A reader of the Prometheus text exposition format, enough for tests: samples by name and
/// labels (label values without `",` inside; comments and `# TYPE` lines skipped).
public struct PrometheusText: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public let samples: [Sample]

    public init(_ text: String) throws {
        var samples: [Sample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.isEmpty {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw ChildProcessError("unreadable metrics line: \(line)")
            }
            let series = line[..<space]
            var labels: [String: String] = [:]
            let name: Substring
            if let open = series.firstIndex(of: "{"), series.last == "}" {
                name = series[..<open]
                let body = series[series.index(after: open)..<series.index(before: series.endIndex)]
                for pair in body.split(separator: "\",") {
                    guard let equals = pair.firstIndex(of: "=") else { throw ChildProcessError("unreadable labels: \(line)") }
                    var value = pair[pair.index(after: equals)...]
                    if value.hasPrefix("\"") { value = value.dropFirst() }
                    if value.hasSuffix("\"") { value = value.dropLast() }
                    labels[String(pair[..<equals])] = String(value)
                }
            } else {
                name = series
            }
            samples.append(Sample(name: String(name), labels: labels, value: value))
        }
        self.samples = samples
    }

    /// The samples named `name` whose labels include `labels`.
    public func matching(_ name: String, _ labels: [String: String] = [:]) -> [Sample] {
        samples.filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }
    }

    /// The sum of the samples named `name` whose labels include `labels` (0 when there are none).
    public func sum(_ name: String, _ labels: [String: String] = [:]) -> Double {
        matching(name, labels).reduce(0) { $0 + $1.value }
    }
}
