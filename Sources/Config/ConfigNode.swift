// A YAML document as a tree of nodes with line numbers (Yams parses; QShape checks), and the
// one-line `ConfigError`.
import Yams

/// A config problem: the file, the key path and what is allowed, in one line.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let path: String
    public let line: Int?
    public let message: String

    public init(file: String, path: String, line: Int? = nil, _ message: String) {
        self.file = file; self.path = path; self.line = line; self.message = message
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return path.isEmpty ? "\(location): \(message)" : "\(location): \(path): \(message)"
    }
}

/// A parsed YAML document as plain values (with source lines for messages).
public struct ConfigNode: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case scalar(String)
        case mapping([Entry])
        case sequence([ConfigNode])
        case null
    }
    public struct Entry: Equatable, Sendable {
        public var key: String
        public var value: ConfigNode
    }

    public var kind: Kind
    public var line: Int?

    public init(_ kind: Kind, line: Int? = nil) { self.kind = kind; self.line = line }

    public static func scalar(_ s: String) -> ConfigNode { ConfigNode(.scalar(s)) }
    public static func mapping(_ pairs: [(String, ConfigNode)]) -> ConfigNode {
        ConfigNode(.mapping(pairs.map { Entry(key: $0.0, value: $0.1) }))
    }
    public static func sequence(_ items: [ConfigNode]) -> ConfigNode { ConfigNode(.sequence(items)) }

    /// Parses YAML text; a syntax error names the file and line.
    public static func parse(yaml: String, file: String) throws -> ConfigNode {
        if let line = aliasLine(yaml) {
            throw ConfigError(
                file: file, path: "", line: line,
                "YAML anchors and aliases (&name, *name) are not supported in configs; write the value out")
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let e as YamlError {
            throw ConfigError(
                file: file, path: "",
                "not valid YAML: \(String(describing: e).split(separator: "\n").first ?? "")")
        }
        guard let node else { return ConfigNode(.mapping([])) }
        var seen = Set<[Int]>()
        return try convert(node, file: file, seen: &seen)
    }

    /// The first line (1-based) with an anchor or alias token, found before Yams sees the text:
    /// Yams resolves aliases while composing, and hashing a mapping key made of nested aliases
    /// takes time exponential in their depth. A token is `&` or `*` where a node can start (at the
    /// line's start or after `-`, `:`, `?`, `[`, `{`, `,`), outside quotes and comments.
    static func aliasLine(_ yaml: String) -> Int? {
        for (index, line) in yaml.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // `before`: the character just before; `token`: the last one that was not a blank.
            var quote: Character?, before: Character?, token: Character?
            for c in line {
                defer { before = c }
                if let q = quote {
                    if c == q { quote = nil }
                    continue
                }
                let blank = before == nil || before == " " || before == "\t"
                if c == "#" && blank { break }
                if c == "'" || c == "\"" { quote = c }
                let starts = blank || before == "[" || before == "{" || before == ","
                if (c == "&" || c == "*") && starts && (token == nil || "-:?[{,".contains(token!)) {
                    return index + 1
                }
                if c != " " && c != "\t" { token = c }
            }
        }
        return nil
    }

    /// The most nodes a config may have (the examples have about 60).
    static let maxNodes = 100_000

    /// Yams resolves an alias to the anchored node itself, so an alias shows as a node met twice at
    /// the same source position: refused there, before a chain of aliases can multiply the tree.
    private static func convert(_ node: Node, file: String, seen: inout Set<[Int]>) throws -> ConfigNode {
        let line = node.mark.map { $0.line }
        if let m = node.mark, !seen.insert([m.line, m.column]).inserted {
            throw ConfigError(
                file: file, path: "", line: line,
                "YAML aliases (*name) are not supported in configs; write the value out")
        }
        guard seen.count <= maxNodes else {
            throw ConfigError(
                file: file, path: "", line: line, "more than \(maxNodes) YAML nodes; a config is far smaller")
        }
        switch node {
        case .scalar(let s):
            if s.tag.description == "tag:yaml.org,2002:null"
                || (s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string))
            {
                return ConfigNode(.null, line: line)
            }
            return ConfigNode(.scalar(s.string), line: line)
        case .mapping(let m):
            var entries: [Entry] = []
            for (k, v) in m {
                guard case .scalar(let ks) = k else {
                    throw ConfigError(file: file, path: "", line: line, "mapping keys must be plain words")
                }
                if entries.contains(where: { $0.key == ks.string }) {
                    throw ConfigError(file: file, path: ks.string, line: k.mark?.line, "key appears twice")
                }
                entries.append(Entry(key: ks.string, value: try convert(v, file: file, seen: &seen)))
            }
            return ConfigNode(.mapping(entries), line: line)
        case .sequence(let s):
            var items: [ConfigNode] = []
            for item in s { items.append(try convert(item, file: file, seen: &seen)) }
            return ConfigNode(.sequence(items), line: line)
        case .alias:
            throw ConfigError(file: file, path: "", line: line, "YAML aliases are not supported in configs")
        }
    }

    /// The same tree with no source lines.
    var withoutLines: ConfigNode {
        switch kind {
        case .mapping(let entries):
            return ConfigNode(.mapping(entries.map { Entry(key: $0.key, value: $0.value.withoutLines) }))
        case .sequence(let items): return ConfigNode(.sequence(items.map(\.withoutLines)))
        default: return ConfigNode(kind)
        }
    }

    public var entries: [Entry]? { if case .mapping(let e) = kind { return e } else { return nil } }
    public subscript(key: String) -> ConfigNode? { entries?.first { $0.key == key }?.value }

    /// Sets the value at a dotted path (`training.optimizer.lr`, `model.layers.1.out`), creating
    /// mappings on the way; numeric components index sequences.
    public mutating func set(path: [String], to value: ConfigNode, file: String, fullPath: String) throws {
        guard let head = path.first else { self = value; return }
        let rest = Array(path.dropFirst())
        switch kind {
        case .mapping(var entries):
            if let i = entries.firstIndex(where: { $0.key == head }) {
                try entries[i].value.set(path: rest, to: value, file: file, fullPath: fullPath)
            } else {
                var child = ConfigNode(.mapping([]))
                try child.set(path: rest, to: value, file: file, fullPath: fullPath)
                entries.append(Entry(key: head, value: child))
            }
            kind = .mapping(entries)
        case .null:
            kind = .mapping([])
            try set(path: path, to: value, file: file, fullPath: fullPath)
        case .sequence(var items):
            guard let i = Int(head), i >= 0, i < items.count else {
                throw ConfigError(
                    file: file, path: fullPath,
                    "'\(head)' is not an index of this list (0…\(items.count - 1))")
            }
            try items[i].set(path: rest, to: value, file: file, fullPath: fullPath)
            kind = .sequence(items)
        case .scalar:
            throw ConfigError(file: file, path: fullPath, "'\(head)' goes inside a plain value")
        }
    }

    /// Applies one `--set key.path=value` override (the value is read as YAML: `0.5`, `[1, 2]`, `adam`).
    public mutating func apply(override: String, file: String) throws {
        guard let eq = override.firstIndex(of: "="), eq != override.startIndex else {
            throw ConfigError(file: "--set", path: "", "'\(override)' is not key.path=value")
        }
        let key = String(override[..<eq]), text = String(override[override.index(after: eq)...])
        // The value's lines are lines of the override, not of the file: drop them.
        let value = try ConfigNode.parse(yaml: text.isEmpty ? "''" : text, file: "--set \(key)").withoutLines
        try set(path: key.split(separator: ".").map(String.init), to: value, file: "--set", fullPath: key)
    }
}
