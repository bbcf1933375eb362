// Typed, validated reads of one config mapping: unknown keys with the nearest valid one, ranges,
// choices, and the line each error points at.
/// Reads one mapping of a config, checking every key: unknown keys (with the nearest valid key
/// suggested), wrong types and out-of-range values become a `ConfigError` naming the key path.
struct ConfigReader {
    let file: String
    let path: String
    let node: ConfigNode

    init(file: String, path: String, node: ConfigNode?, allowed: [String]) throws {
        self.file = file
        self.path = path
        self.node = node ?? ConfigNode(.mapping([]))
        if case .null = self.node.kind { return }
        guard let entries = self.node.entries else {
            throw ConfigError(
                file: file, path: path, line: self.node.line,
                "expected a mapping of keys (\(allowed.joined(separator: ", ")))")
        }
        for e in entries where !allowed.contains(e.key) {
            let hint = nearest(e.key, in: allowed).map { "did you mean '\($0)'? " } ?? ""
            throw ConfigError(
                file: file, path: join(e.key), line: e.value.line,
                "unknown key; \(hint)allowed: \(allowed.joined(separator: ", "))")
        }
    }

    func join(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func has(_ key: String) -> Bool {
        guard let v = node[key] else { return false }
        if case .null = v.kind { return false }
        return true
    }

    private func scalar(_ key: String, expected: String) throws -> (String, Int?)? {
        guard let v = node[key] else { return nil }
        switch v.kind {
        case .null: return nil
        case .scalar(let s): return (s, v.line)
        default:
            throw ConfigError(
                file: file, path: join(key), line: v.line, "expected \(expected), got a \(v.kind.name)")
        }
    }

    func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, path: join(key), line: node[key]?.line, message)
    }

    /// A real number in `range` (bounds described in the message).
    func number(
        _ key: String, default value: Double, min: Double? = nil, max: Double? = nil,
        exclusiveMin: Bool = false, exclusiveMax: Bool = false
    ) throws -> Double {
        let allowed = describeRange(
            min: min, max: max, exclusiveMin: exclusiveMin, exclusiveMax: exclusiveMax, what: "a number")
        guard let (s, line) = try scalar(key, expected: allowed) else { return value }
        guard let d = Double(s), d.isFinite else {
            throw ConfigError(file: file, path: join(key), line: line, "expected \(allowed), got '\(s)'")
        }
        // Values are used as Float: keep them (and what is computed from them) finite and normal.
        guard d == 0 || (abs(d) <= 1e30 && abs(d) >= 1e-30) else {
            throw ConfigError(
                file: file, path: join(key), line: line,
                "expected \(allowed) of magnitude 1e-30…1e30 (or 0), got \(s)")
        }
        let low = min.map { exclusiveMin ? d <= $0 : d < $0 } ?? false
        let high = max.map { exclusiveMax ? d >= $0 : d > $0 } ?? false
        if low || high {
            throw ConfigError(file: file, path: join(key), line: line, "expected \(allowed), got \(s)")
        }
        return d
    }

    func optionalNumber(
        _ key: String, min: Double? = nil, max: Double? = nil, exclusiveMin: Bool = false
    ) throws -> Double? {
        has(key) ? try number(key, default: 0, min: min, max: max, exclusiveMin: exclusiveMin) : nil
    }

    /// A whole number in `min…max`.
    func integer(_ key: String, default value: Int, min: Int? = nil, max: Int? = nil) throws -> Int {
        let allowed = describeRange(
            min: min.map(Double.init), max: max.map(Double.init), exclusiveMin: false,
            exclusiveMax: false, what: "a whole number")
        guard let (s, line) = try scalar(key, expected: allowed) else { return value }
        guard let i = Int(s) else {
            throw ConfigError(file: file, path: join(key), line: line, "expected \(allowed), got '\(s)'")
        }
        if let min, i < min {
            throw ConfigError(file: file, path: join(key), line: line, "expected \(allowed), got \(s)")
        }
        if let max, i > max {
            throw ConfigError(file: file, path: join(key), line: line, "expected \(allowed), got \(s)")
        }
        return i
    }

    func optionalInteger(_ key: String, min: Int? = nil, max: Int? = nil) throws -> Int? {
        has(key) ? try integer(key, default: 0, min: min, max: max) : nil
    }

    func bool(_ key: String, default value: Bool) throws -> Bool {
        guard let (s, line) = try scalar(key, expected: "true or false") else { return value }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            throw ConfigError(file: file, path: join(key), line: line, "expected true or false, got '\(s)'")
        }
    }

    func string(_ key: String, default value: String) throws -> String {
        try scalar(key, expected: "a string")?.0 ?? value
    }

    func optionalString(_ key: String) throws -> String? { try scalar(key, expected: "a string")?.0 }

    /// One of `choices` (suggesting the nearest for a typo).
    func choice(_ key: String, default value: String, _ choices: [String]) throws -> String {
        guard let (s, line) = try scalar(key, expected: "one of \(choices.joined(separator: ", "))") else {
            return value
        }
        guard choices.contains(s) else {
            let hint = nearest(s, in: choices).map { "did you mean '\($0)'? " } ?? ""
            throw ConfigError(
                file: file, path: join(key), line: line,
                "'\(s)' is not allowed; \(hint)expected one of \(choices.joined(separator: ", "))")
        }
        return s
    }

    func sequence(_ key: String) throws -> [ConfigNode]? {
        guard let v = node[key] else { return nil }
        switch v.kind {
        case .null: return nil
        case .sequence(let items): return items
        default:
            throw ConfigError(
                file: file, path: join(key), line: v.line, "expected a list, got a \(v.kind.name)")
        }
    }

    /// A list of whole numbers, each at least `min`.
    func integers(_ key: String, min: Int = 1) throws -> [Int]? {
        guard let items = try sequence(key) else { return nil }
        return try items.enumerated().map { i, item in
            guard case .scalar(let s) = item.kind, let v = Int(s), v >= min else {
                throw ConfigError(
                    file: file, path: "\(join(key))[\(i)]", line: item.line,
                    "expected a whole number ≥ \(min)")
            }
            return v
        }
    }

    func child(_ key: String, allowed: [String]) throws -> ConfigReader {
        try ConfigReader(file: file, path: join(key), node: node[key], allowed: allowed)
    }
}

extension ConfigNode.Kind {
    var name: String {
        switch self {
        case .scalar: "plain value"
        case .mapping: "mapping"
        case .sequence: "list"
        case .null: "null"
        }
    }
}

private func describeRange(
    min: Double?, max: Double?, exclusiveMin: Bool, exclusiveMax: Bool, what: String
) -> String {
    func f(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x) }
    switch (min, max) {
    case let (lo?, hi?):
        return "\(what) in \(exclusiveMin ? "(" : "[")\(f(lo)), \(f(hi))\(exclusiveMax ? ")" : "]")"
    case let (lo?, nil): return "\(what) \(exclusiveMin ? ">" : "≥") \(f(lo))"
    case let (nil, hi?): return "\(what) \(exclusiveMax ? "<" : "≤") \(f(hi))"
    default: return what
    }
}

/// The candidate within edit distance 2 (or a third of the word) of `word`, if any.
func nearest(_ word: String, in candidates: [String]) -> String? {
    let scored = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    return best.1 <= max(2, word.count / 3) ? best.0 : nil
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    var prev = Array(0...b.count)
    for i in 1...a.count {
        var cur = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...max(1, b.count) where j <= b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[b.count]
}
