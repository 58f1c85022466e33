import Foundation
import Testing
@testable import TokiConfig

@Suite struct TOMLReaderTests {
    @Test func readsTheSubsetWithLines() throws {
        let root = try TOMLReader.parse("""
            # comment
            [hub]
            listen = "0.0.0.0:8080"   # trailing comment
            max_body_mib = 1_024
            ratio = -2.5e3
            no_lz4 = true
            path = 'C:\\raw\\path'
            escaped = "a\\"b\\u00e9\\n"

            [worker.models."llama3:8b"]
            api_keys = [
              "k1",  # first
              "k2",
            ]
            """)
        let hub = try #require(root.tables["hub"])
        #expect(hub.line == 2)
        #expect(hub.values["listen"] == TOMLEntry(value: .string("0.0.0.0:8080"), line: 3))
        #expect(hub.values["max_body_mib"] == TOMLEntry(value: .integer(1024), line: 4))
        #expect(hub.values["ratio"]?.value == .float(-2500))
        #expect(hub.values["no_lz4"]?.value == .boolean(true))
        #expect(hub.values["path"]?.value == .string("C:\\raw\\path"))
        #expect(hub.values["escaped"]?.value == .string("a\"bé\n"))
        #expect(hub.order == ["listen", "max_body_mib", "ratio", "no_lz4", "path", "escaped"])
        let model = try #require(root.tables["worker"]?.tables["models"]?.tables["llama3:8b"])
        #expect(model.line == 10)
        #expect(model.values["api_keys"] == TOMLEntry(value: .array([.string("k1"), .string("k2")]), line: 11))
    }

    @Test(arguments: [
        ("[hub]\nx = 1\nx = 2\n", 3, "key 'x' is set twice (first at line 2)"),
        ("[hub]\n[hub]\n", 2, "table [hub] is defined twice (first at line 1)"),
        ("[hub]\nx = {a = 1}\n", 2, "inline tables ({…}) are not supported: use a [table]"),
        ("[[hub]]\n", 1, "arrays of tables ([[…]]) are not supported"),
        ("[hub]\na.b = 1\n", 2, "dotted keys (a.…) are not supported: use a [table]"),
        ("[hub]\nx = \"open\n", 2, "unterminated string"),
        ("[hub]\nx = hello\n", 2, "invalid value hello (strings need quotes)"),
        ("[hub]\nx = 1 2\n", 2, "unexpected text after the value: expected the end of the line"),
        ("[hub]\nx = 1979-05-27\n", 2, "dates and times are not supported (got 1979-05-27); quote it as a string"),
        ("[hub]\nx = 99999999999999999999\n", 2, "invalid or too large integer 99999999999999999999"),
        ("[hub]\nx = 012\n", 2, "invalid or too large integer 012"),
        ("[hub]\nx = [1, 2\n", 3, "unterminated array"),
        ("[hub]\nx =\n", 2, "expected a value"),
        ("[hub]\nx = \"\"\"a\"\"\"\n", 2, "multi-line strings (\"\"\") are not supported"),
        ("[hub]\nx = \"\\q\"\n", 2, "invalid escape \\q in a string"),
        ("x = 1\n[x]\n", 2, "[x]: 'x' is already a value (line 1)"),
    ])
    func rejectsWithTheLine(text: String, line: Int, message: String) {
        #expect(throws: TOMLSyntaxError(line: line, message: message)) { try TOMLReader.parse(text) }
    }
}

@Suite struct ConfigFileTests {
    @Test func unknownKeysAndWrongTypesNameKeyLineAndType() throws {
        let file = try ConfigFile(text: """
            [hub]
            listen = "127.0.0.1:9000"
            max_body_mb = 8
            heartbeat_timeout = "45"
            no_lz4 = 1
            max_body_mib = 1000

            [hub.extra]
            [wroker]
            """, path: "toki.toml")
        #expect(file.problems() == [
            "toki.toml:3: unknown key 'max_body_mb' in [hub]",
            "toki.toml:4: key 'heartbeat_timeout' in [hub]: expected an integer, got a string",
            "toki.toml:5: key 'no_lz4' in [hub]: expected a boolean (true or false), got an integer",
            "toki.toml:6: key 'max_body_mib' in [hub]: must be between 1 and 64",
            "toki.toml:8: unknown table [hub.extra]",
            "toki.toml:9: unknown section [wroker] (toki reads [hub], [relay] and [worker])",
        ])
        #expect(throws: ConfigError(file.problems())) { try file.section(for: HubSettings()) }
    }

    @Test func aKeyOutsideASectionAndAMissingSection() throws {
        let stray = try ConfigFile(text: "listen = \"x:1\"\n[relay]\nupstream = \"http://h:1\"\n", path: "f")
        #expect(stray.problems() == ["f:1: key 'listen' is outside a section: put it under [hub], [relay] or [worker]"])
        let relayOnly = try ConfigFile(text: "[relay]\nupstream = \"http://h:1\"\n", path: "f")
        #expect(relayOnly.problems().isEmpty)
        #expect(throws: ConfigError("f: no [hub] section")) { try relayOnly.section(for: HubSettings()) }
        #expect(try ConfigFile(text: "# nothing\n", path: "f").problems() == ["f: no [hub], [relay] or [worker] section"])
    }

    @Test func aSyntaxErrorNamesPathAndLine() {
        #expect(throws: ConfigError("w.toml:2: unterminated string")) { try ConfigFile(text: "[worker]\nhub = \"ws://x\n", path: "w.toml") }
    }

    @Test func workerModels() throws {
        let file = try ConfigFile(text: """
            [worker]
            hub = "wss://hub.example.com"
            backend = ["http://127.0.0.1:11434", "http://127.0.0.1:8000"]

            [worker.models."qwen/Qwen2.5-7B"]
            url = "http://10.0.0.2:8000"
            mapped_name = "Qwen2.5-7B-Instruct"
            api_keys = ["a", "b"]

            [worker.models."qwen/Qwen2.5-7B".headers]
            X-Tenant = "lab"
            """, path: "w.toml")
        let section = try file.section(for: WorkerSettings())
        let model = try #require(section.workerModels.first)
        #expect(section.workerModels.count == 1)
        #expect(model.name == "qwen/Qwen2.5-7B" && model.url == "http://10.0.0.2:8000" && model.mappedName == "Qwen2.5-7B-Instruct")
        #expect(model.headers == ["X-Tenant": "lab"] && model.apiKeys == ["a", "b"] && model.backendType == "")
        let settings = try ResolvedSettings<WorkerSettings>(arguments: [], environment: [:], file: section)
        #expect(settings.value(settings.group.backend) == ["http://127.0.0.1:11434", "http://127.0.0.1:8000"])
    }

    @Test func badWorkerModels() throws {
        let file = try ConfigFile(text: """
            [worker.models]
            stray = 1
            [worker.models.m]
            mapped = "x"
            api_keys = "k"
            [worker.models.m.headers]
            X-N = 3
            [worker.other]
            """, path: "w")
        #expect(file.problems() == [
            "w:2: [worker.models] holds one table per model: write [worker.models.stray] with url = …",
            "w:3: [worker.models.m] needs url = \"http://…\"",
            "w:4: unknown key 'mapped' in [worker.models.m] (known: url, mapped_name, backend_type, api_key_header, api_key_prefix, api_keys, [headers])",
            "w:5: key 'api_keys' in [worker.models.m]: expected an array of strings, got a string",
            "w:7: header 'X-N' in [worker.models.m]: expected a string, got an integer",
            "w:8: unknown table [worker.other]",
        ])
    }
}

@Suite struct ResolvedSettingsTests {
    func file(_ text: String) throws -> ConfigSection {
        try ConfigFile(text: text, path: "t.toml").section(for: HubSettings())
    }

    @Test func flagsBeatEnvironmentBeatsFileBeatsDefault() throws {
        let section = try file("[hub]\nmax_body_mib = 8\nresponse_timeout = 60\nping_interval = 5\n")
        let settings = try ResolvedSettings<HubSettings>(
            arguments: ["--max-body-mib", "16", "--no-lz4"],
            environment: ["TOKI_HUB_MAX_BODY_MIB": "12", "TOKI_HUB_RESPONSE_TIMEOUT": "90"], file: section)
        let s = settings.group
        #expect(settings[s.maxBodyMib] == 16)
        #expect(settings.source(s.maxBodyMib) == "--max-body-mib")
        #expect(settings[s.responseTimeout] == 90)
        #expect(settings.source(s.responseTimeout) == "$TOKI_HUB_RESPONSE_TIMEOUT")
        #expect(settings[s.pingInterval] == 5)
        #expect(settings.source(s.pingInterval) == "t.toml:4: ping_interval")
        #expect(settings[s.heartbeatTimeout] == 45)
        #expect(settings[s.noLz4] == true)
        #expect(settings[s.noSmux2] == false)
        #expect(settings.value(s.tokenRpm) == nil)
    }

    @Test func flagForms() throws {
        let settings = try ResolvedSettings<WorkerSettings>(
            arguments: ["--backend", "http://a:1", "--backend=http://b:2,c", "--heartbeat-seconds=20", "--heartbeat-seconds", "30"],
            environment: ["TOKI_WORKER_BACKEND": "http://env:1"], file: nil)
        #expect(settings.value(settings.group.backend) == ["http://a:1", "http://b:2,c"])
        #expect(settings.flag(settings.group.heartbeatSeconds) == 30)
        let fromEnvironment = try ResolvedSettings<WorkerSettings>(arguments: [], environment: ["TOKI_WORKER_BACKEND": "http://a:1, http://b:2"], file: nil)
        #expect(fromEnvironment.value(fromEnvironment.group.backend) == ["http://a:1", "http://b:2"])
    }

    @Test func everyBadSourceIsReportedAtOnce() {
        #expect(throws: ConfigError([
            "unknown option '--max-body'",
            "--response-timeout: expected an integer, got 'soon'",
            "--no-lz4 takes no value",
            "unexpected argument 'stray'",
            "--ping-interval: must be positive",
            "--listen needs a value (host:port)",
            "$TOKI_HUB_LOG_LEVEL: must be one of trace, debug, info, notice, warning, error, critical",
            "$TOKI_HUB_LISTN is not a setting of the [hub] section (see --help)",
        ])) {
            try ResolvedSettings<HubSettings>(
                arguments: ["--max-body", "3", "--response-timeout", "soon", "--no-lz4=yes", "stray", "--ping-interval", "0", "--listen"],
                environment: ["TOKI_HUB_LOG_LEVEL": "loud", "TOKI_HUB_LISTN": "x", "TOKI_RELAY_OTHER": "ignored: another mode's"], file: nil)
        }
    }

    @Test func tokiameVariablesAreLeftToTheWorker() throws {
        // TOKIAME_* keep tokiame's lenient rules (a bad number is ignored there), so they are not checked here.
        let settings = try ResolvedSettings<WorkerSettings>(arguments: [], environment: ["TOKIAME_HEARTBEAT_INTERVAL_SECONDS": "x"], file: nil)
        #expect(settings.value(settings.group.heartbeatSeconds) == nil)
    }

    @Test func sharedTokenVariable() throws {
        let settings = try ResolvedSettings<RelaySettings>(arguments: [], environment: ["TOKI_TOKEN": "sk-1"], file: nil)
        #expect(settings.value(settings.group.token) == "sk-1")
    }
}

@Suite struct ConfigTextTests {
    /// Every setting's key is the snake_case of its property (and so of its flag).
    @Test(arguments: ConfigMode.allCases)
    func keysFollowThePropertyNames(mode: ConfigMode) {
        let group = mode.group
        for child in Mirror(reflecting: group).children {
            guard let label = child.label, let setting = child.value as? any AnySetting else { continue }
            let snake = label.reduce(into: "") { out, c in out += c.isUppercase ? "_" + c.lowercased() : String(c) }
            #expect(setting.key == snake, "\(label) has key \(setting.key)")
        }
        #expect(Set(group.all.map(\.key)).count == group.all.count)
    }

    /// Uncommenting every `# key = value` line of the example gives a valid file with every key.
    @Test(arguments: ConfigMode.allCases)
    func theExampleIsValidWhenUncommented(mode: ConfigMode) throws {
        let example = ConfigText.example(mode)
        let keys = Set(mode.group.all.map(\.key))
        var seen: Set<String> = []
        let uncommented = example.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard line.hasPrefix("# ") else { return String(line) }
            let body = line.dropFirst(2)
            if body.hasPrefix("[worker.") { return String(body) }
            guard let eq = body.range(of: " = ") else { return String(line) }
            let key = String(body[..<eq.lowerBound])
            guard key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else { return String(line) }
            if keys.contains(key) { seen.insert(key) }
            return String(body)
        }.joined(separator: "\n")
        #expect(seen == keys)
        let file = try ConfigFile(text: uncommented, path: "example")
        #expect(file.problems() == [])
        #expect(try ConfigFile(text: example, path: "example").problems() == [])
    }

    /// contrib/toki-MODE.toml is what `toki config example MODE` prints.
    @Test(arguments: ConfigMode.allCases)
    func contribFilesAreTheGeneratedExamples(mode: ConfigMode) throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let committed = try String(contentsOf: root.appendingPathComponent("contrib/toki-\(mode.rawValue).toml"), encoding: .utf8)
        #expect(committed == ConfigText.example(mode), "regenerate: toki config example \(mode.rawValue) > contrib/toki-\(mode.rawValue).toml")
    }

    @Test func helpNamesFlagVariableAndKey() {
        let settings = WorkerSettings()
        #expect(ConfigText.optionHelp(settings.maxConcurrent, section: "worker") == "Requests served at once; more are refused with an error at once. (default: 1024) Flag --max-concurrent, environment TOKI_WORKER_MAX_CONCURRENT, key max_concurrent.")
        #expect(ConfigText.optionHelp(settings.hub, section: "worker").hasSuffix("Flag --hub, environment TOKIAME_GATEWAY_URL, key hub."))
        #expect(ConfigText.optionHelp(settings.lz4, section: "worker").hasSuffix("on slow uplinks). Flag --lz4, environment TOKI_WORKER_LZ4, key lz4."))
    }

    /// Sources/toki/SettingFlags.swift declares every setting to ArgumentParser (--help and shell
    /// completion); it is generated from the settings. TOKI_REGENERATE=1 rewrites it.
    @Test func argumentParserDeclarationsAreGenerated() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let file = root.appendingPathComponent("Sources/toki/SettingFlags.swift")
        let generated = ConfigText.argumentParserSource()
        if ProcessInfo.processInfo.environment["TOKI_REGENERATE"] == "1" {
            try generated.write(to: file, atomically: true, encoding: .utf8)
        }
        #expect(try String(contentsOf: file, encoding: .utf8) == generated,
                "regenerate: TOKI_REGENERATE=1 swift test --filter TokiConfigTests")
        for mode in ConfigMode.allCases {
            for setting in mode.group.all {
                #expect(generated.contains("@\(setting.isSwitch ? "Flag" : "Option")(name: .customLong(\"\(setting.flag.dropFirst(2))\")"))
                #expect(generated.contains("help: .setting(\(type(of: mode.group))(), \"\(setting.key)\")"))
            }
        }
        #expect(ConfigText.camelCase("max_body_mib") == "maxBodyMib")
        #expect(generated.contains("@Flag(name: .customLong(\"no-lz4\")"))
        #expect(generated.contains("var backend: [String] = []"))
    }
}
