import Foundation

/// Two or more runs side by side: what differs in their configs, accuracy by bit width with deltas
/// to the first run, per-layer statistics, and (in HTML) each layer's weights overlaid.
public struct Comparison: Codable, Sendable {
    public struct RunAccuracy: Codable, Sendable {
        public var run: String
        public var simulated: Double?
        public var integer: Double?
        /// simulated (or integer when present) minus the first run's, in points.
        public var delta: Double?
        /// The exported C's parameter flash and activation RAM at this width.
        public var flashBytes: Int?
        public var ramBytes: Int?
    }
    public struct BitsRow: Codable, Sendable {
        public var bits: Int
        public var runs: [RunAccuracy]
    }
    public struct LayerStats: Codable, Sendable {
        public var run: String
        public var skewness, kurtosis, maxAbsOverStd, sqnrDb: Double
        public var bits: Int
    }
    public struct LayerRow: Codable, Sendable {
        public var name: String
        public var runs: [LayerStats]
    }

    public var runs: [String]
    public var floatAccuracy: [Double]
    /// Keys whose values differ between runs (a missing key is "–").
    public var configDifferences: [String: [String]]
    public var accuracy: [BitsRow]
    public var layers: [LayerRow]

    public init(_ reports: [Report]) {
        runs = reports.map(\.run)
        floatAccuracy = reports.map { $0.accuracy?.float ?? $0.training.testAccuracy }
        let keys = Set(reports.flatMap(\.config.keys))
        var diff: [String: [String]] = [:]
        for k in keys where Set(reports.map { $0.config[k] ?? "–" }).count > 1 { diff[k] = reports.map { $0.config[k] ?? "–" } }
        configDifferences = diff
        let bits = Set(reports.flatMap { $0.accuracy?.rows.map(\.bits) ?? [] }).sorted(by: >)
        accuracy = bits.map { b in
            let rows = reports.map { r in r.accuracy?.rows.first { $0.bits == b } }
            let base = rows.first.flatMap { $0.map { $0.integer ?? $0.simulated } }
            return BitsRow(bits: b, runs: zip(reports, rows).map { r, row in
                let v = row.map { $0.integer ?? $0.simulated }
                return RunAccuracy(run: r.run, simulated: row?.simulated, integer: row?.integer,
                                   delta: v.flatMap { v in base.map { v - $0 } }, flashBytes: row?.flashBytes, ramBytes: row?.ramBytes)
            })
        }
        let names = reports.first?.layers.map(\.name) ?? []
        layers = names.map { n in
            LayerRow(name: n, runs: reports.compactMap { r in
                r.layers.first { $0.name == n }.map {
                    LayerStats(run: r.run, skewness: $0.skewness, kurtosis: $0.kurtosis, maxAbsOverStd: $0.maxAbsOverStd,
                               sqnrDb: $0.sqnrDb, bits: $0.bits)
                }
            })
        }
    }

    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        e.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try e.encode(self), as: UTF8.self) + "\n"
    }

    /// "88.42 (+0.31)" style cells: the value (integer when measured, else simulated) and its delta.
    func cell(_ a: RunAccuracy, first: Bool) -> String {
        guard let v = a.integer ?? a.simulated else { return "–" }
        return first ? Format.pct(v) : "\(Format.pct(v)) (\(Format.signed(a.delta ?? 0)))"
    }

    /// Whether any run has deployment figures.
    var deployment: Bool { accuracy.contains { $0.runs.contains { $0.flashBytes != nil } } }

    func deploymentCell(_ a: RunAccuracy) -> String {
        a.flashBytes == nil ? "–" : "\(Format.kib(a.flashBytes)) / \(Format.kib(a.ramBytes))"
    }

    /// The headline: accuracy kept at the given widths, per run.
    public func headline(bits wanted: [Int] = [8, 4, 3]) -> String {
        var lines: [String] = []
        for row in accuracy where wanted.contains(row.bits) {
            lines.append("\(row.bits)-bit weights: " + row.runs.enumerated().map { i, a in "\(a.run) \(cell(a, first: i == 0))" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    public func markdown() -> String {
        var out = "# QShape comparison\n\nRuns: " + runs.map { "`\($0)`" }.joined(separator: ", ") + "\n\n"
        out += "## Config differences\n\n"
        if configDifferences.isEmpty { out += "None.\n" } else {
            out += "| key | " + runs.joined(separator: " | ") + " |\n|---|" + runs.map { _ in "---|" }.joined() + "\n"
            for k in configDifferences.keys.sorted() { out += "| `\(k)` | " + configDifferences[k]!.map { "`\($0)`" }.joined(separator: " | ") + " |\n" }
        }
        out += "\n## Accuracy by bit width\n\nTest accuracy (%); the integer engine where measured, else the simulation; in brackets the change from `\(runs.first ?? "")`.\n\n"
        out += "| weights | " + runs.joined(separator: " | ") + " |\n|---|" + runs.map { _ in "---|" }.joined() + "\n"
        out += "| float | " + floatAccuracy.enumerated().map { i, f in i == 0 ? Format.pct(f) : "\(Format.pct(f)) (\(Format.signed(f - floatAccuracy[0])))" }.joined(separator: " | ") + " |\n"
        for row in accuracy {
            out += "| \(row.bits)-bit | " + row.runs.enumerated().map { cell($1, first: $0 == 0) }.joined(separator: " | ") + " |\n"
        }
        if deployment {
            out += "\n## Deployment (exported C)\n\nFlash of the weights, biases, multipliers and shifts / RAM of the activation buffers.\n\n"
            out += "| weights | " + runs.joined(separator: " | ") + " |\n|---|" + runs.map { _ in "---|" }.joined() + "\n"
            for row in accuracy {
                out += "| \(row.bits)-bit | " + row.runs.map(deploymentCell).joined(separator: " | ") + " |\n"
            }
        }
        out += "\n## Layers\n\n| layer | run | skewness | kurtosis | max\\|w\\|/σ | SQNR (dB) |\n|---|---|---|---|---|---|\n"
        for l in layers {
            for s in l.runs {
                out += "| \(l.name) | \(s.run) | \(Format.num(s.skewness)) | \(Format.num(s.kurtosis)) | \(Format.num(s.maxAbsOverStd, 2)) | \(Format.db(s.sqnrDb)) @\(s.bits)b |\n"
            }
        }
        return out
    }

    public func html(_ reports: [Report]) -> String {
        var b = "<h1>QShape comparison</h1><p>" + runs.map { "<code>\(escape($0))</code>" }.joined(separator: ", ") + "</p>"
        b += "<h2>Config differences</h2>"
        b += configDifferences.isEmpty ? "<p>None.</p>" : table(["key"] + runs, configDifferences.keys.sorted().map { k in
            ["<code>\(escape(k))</code>"] + configDifferences[k]!.map { "<code>\(escape($0))</code>" }
        })
        b += "<h2>Accuracy by bit width</h2>"
        b += table(["weights"] + runs,
                   [["float"] + floatAccuracy.enumerated().map { i, f in i == 0 ? Format.pct(f) : "\(Format.pct(f)) (\(Format.signed(f - floatAccuracy[0])))" }]
                   + accuracy.map { row in ["\(row.bits)-bit"] + row.runs.enumerated().map { i, a in
                       let text = cell(a, first: i == 0)
                       guard i > 0, let d = a.delta else { return text }
                       return "<span class=\"\(d >= 0 ? "pos" : "neg")\">\(text)</span>"
                   } })
        if let chart = accuracyChart() { b += "<figure>\(chart)</figure>" }
        if deployment {
            b += "<h2>Deployment (exported C)</h2><p>Flash of the weights, biases, multipliers and shifts / RAM of the activation buffers.</p>"
            b += table(["weights"] + runs, accuracy.map { row in ["\(row.bits)-bit"] + row.runs.map(deploymentCell) })
        }
        b += "<h2>Layers</h2>"
        b += table(["layer", "run", "skewness", "kurtosis", "max|w|/σ", "SQNR (dB)"],
                   layers.flatMap { l in l.runs.map { [escape(l.name), escape($0.run), Format.num($0.skewness), Format.num($0.kurtosis),
                                                       Format.num($0.maxAbsOverStd, 2), "\(Format.db($0.sqnrDb)) @\($0.bits)b"] } }, leftColumns: 2)
        if let first = reports.first {
            b += "<div class=\"grid\">"
            for l in first.layers {
                let runs = reports.compactMap { r in r.layers.first { $0.name == l.name }.map { (r.run, $0.histogram) } }
                b += "<figure>\(first.histogramChart(l, runs: runs))<figcaption>\(escape(l.name)): final weights of each run.</figcaption></figure>"
            }
            b += "</div>"
        }
        return page(title: "QShape comparison", body: b)
    }

    func accuracyChart() -> String? {
        guard !accuracy.isEmpty else { return nil }
        let bits = accuracy.map { Double($0.bits) }
        let values = accuracy.flatMap { $0.runs.compactMap { $0.integer ?? $0.simulated } } + floatAccuracy
        var c = Chart(title: "Accuracy by weight bit width", xLabel: "weight bits", yLabel: "test accuracy (%)",
                      x: (bits.min()!, bits.max()!), y: (max(0, values.min()! - 2), min(100, values.max()! + 1)))
        var legend: [(String, String)] = []
        for (i, run) in runs.enumerated() {
            let color = Chart.palette[i % Chart.palette.count]
            let pts = accuracy.sorted { $0.bits < $1.bits }.compactMap { row in (row.runs[i].integer ?? row.runs[i].simulated).map { (Double(row.bits), $0) } }
            c.line(pts, color: color, label: run)
            legend.append((run, color))
        }
        return c.render(legend: legend)
    }
}
