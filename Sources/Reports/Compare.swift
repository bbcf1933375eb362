// Several runs side by side: config differences, accuracy by bit width with deltas, layers, as
// JSON, Markdown and HTML.
import Foundation

/// Two or more runs side by side: what differs in their configs, accuracy by bit width with deltas
/// to the first run, per-layer statistics, and (in HTML) each layer's weights overlaid.
public struct Comparison: Codable, Sendable {
    public struct RunAccuracy: Codable, Sendable {
        public var run: String
        public var simulated: Double?
        public var integer: Double?
        /// The row's figure (`BitsRow.kind`) minus the first run's that has it, in points.
        public var delta: Double?
        /// The exported C's parameter flash and activation RAM at this width.
        public var flashBytes: Int?
        public var ramBytes: Int?
        /// The row's figure for this run: the integer engine's, or the weights-only simulation's
        /// (for a column of several seeds, their mean).
        public var value: Double?
        /// Over a column's runs: the figure's mean, standard deviation and count.
        public var spread: Spread?
        public init(
            run: String, simulated: Double? = nil, integer: Double? = nil, delta: Double? = nil,
            flashBytes: Int? = nil, ramBytes: Int? = nil, value: Double? = nil
        ) {
            self.run = run; self.simulated = simulated; self.integer = integer; self.delta = delta
            self.flashBytes = flashBytes; self.ramBytes = ramBytes; self.value = value
        }
    }
    /// One kind of figure at one weight width: runs measured otherwise are "–" in it, never
    /// mixed in (a weights-only 3-bit simulation and a 3-bit integer W3/A8 run are two rows).
    public struct BitsRow: Codable, Sendable {
        public var bits: Int
        /// "integer W4/A8" or "simulated W4, weights only".
        public var kind: String
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

    /// One column per run, or per group of runs that differ only in their seed.
    public var runs: [String]
    /// Each column's runs.
    public var groups: [[String]]
    public var floatAccuracy: [Double]
    public var floatSpread: [Spread]
    /// Keys whose values differ between runs (a missing key is "–").
    public var configDifferences: [String: [String]]
    public var accuracy: [BitsRow]
    public var layers: [LayerRow]

    /// `defaults`: the value a key has in effect where a run's config lacks it (a run without a
    /// `shaping:` section has `shaping.start_epoch` 0 in effect): such keys differ only when the
    /// values in effect do.
    public init(_ reports: [Report], defaults: [String: String] = [:]) {
        let grouped = Comparison.seedGroups(reports)
        runs = grouped.map(Comparison.groupName)
        groups = grouped.map { $0.map(\.run) }
        floatSpread = grouped.map { g in Spread(g.map { $0.accuracy?.float ?? $0.training.testAccuracy })! }
        floatAccuracy = floatSpread.map(\.mean)
        let keys = Set(reports.flatMap(\.config.keys))
        // Within a column the seeds differ; between columns the first run of each stands for it.
        let firsts = grouped.map { $0[0] }, seeded = grouped.contains { $0.count > 1 }
        var diff: [String: [String]] = [:]
        for k in keys where Set(firsts.map { $0.config[k] ?? defaults[k] ?? "–" }).count > 1 {
            if seeded && Comparison.seedKeys.contains(k) { continue }
            diff[k] = firsts.map { $0.config[k] ?? "–" }
        }
        configDifferences = diff
        // One row per (width, kind), widest first, integer before weights-only.
        var rowKeys: [RowKey] = []
        for r in reports {
            guard let a = r.accuracy else { continue }
            for row in a.rows {
                let key = RowKey(bits: row.bits, kind: a.kind(row))
                if !rowKeys.contains(key) { rowKeys.append(key) }
            }
        }
        rowKeys.sort { $0.bits != $1.bits ? $0.bits > $1.bits : $0.kind < $1.kind }
        let columns = runs
        accuracy = rowKeys.map { Comparison.row($0, grouped, names: columns) }
        let names = reports.first?.layers.map(\.name) ?? []
        layers = names.map { n in
            LayerRow(
                name: n,
                runs: zip(grouped, columns).compactMap { g, column in
                    Comparison.layerStats(n, g, column: column)
                })
        }
    }

    struct RowKey: Equatable { var bits: Int, kind: String }

    /// The columns' figures of one kind at one width (means over a column's seeds); a column
    /// measured otherwise gets an empty cell.
    static func row(_ key: RowKey, _ groups: [[Report]], names: [String]) -> BitsRow {
        var cells: [RunAccuracy] = zip(groups, names).map { g, name in
            let found = g.compactMap { r -> (Report.Accuracy, Report.AccuracyRow)? in
                guard let a = r.accuracy,
                    let row = a.rows.first(where: { $0.bits == key.bits && a.kind($0) == key.kind })
                else { return nil }
                return (a, row)
            }
            guard let (a, row) = found.first else { return RunAccuracy(run: name) }
            func mean(_ f: (Report.AccuracyRow) -> Double?) -> Double? {
                Spread(found.compactMap { f($0.1) })?.mean
            }
            var cell = RunAccuracy(
                run: name, simulated: mean(\.simulated), integer: mean(\.integer), flashBytes: row.flashBytes,
                ramBytes: row.ramBytes, value: mean(a.value))
            cell.spread = Spread(found.compactMap { $0.0.value($0.1) })
            return cell
        }
        if let base = cells.compactMap(\.value).first {
            for i in cells.indices { cells[i].delta = cells[i].value.map { $0 - base } }
        }
        return BitsRow(bits: key.bits, kind: key.kind, runs: cells)
    }

    /// What the accuracy rows are, for the tables.
    static let accuracyNote =
        "Test accuracy (%). \"integer W4/A8\": the integer engine with 4-bit weights and 8-bit activations; \"simulated W4, weights only\": the float model with its weights quantised to 4 bits, everything else float. Runs measured otherwise show \"–\" in a row."

    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        e.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try e.encode(self), as: UTF8.self) + "\n"
    }

    /// "88.42 (+0.31)" style cells: the row's figure and its change from the first run that has it;
    /// "88.42 ± 0.15 (+0.31†)" for a column of seeds whose change is within the spread.
    func cell(_ index: Int, in row: BitsRow) -> String {
        guard let v = row.runs[index].value else { return "–" }
        let text = row.runs[index].spread?.text ?? Format.pct(v)
        let isBase = row.runs.firstIndex { $0.value != nil } == index
        return isBase
            ? text : "\(text) (\(Format.signed(row.runs[index].delta ?? 0))\(spreadMark(index, in: row)))"
    }

    /// The float row's cells, as `cell` writes the others.
    func floatCells() -> [String] {
        floatSpread.enumerated().map { i, s in
            let mark = i > 0 && floatSpread[0].overlaps(s) ? "†" : ""
            return i == 0 ? s.text : "\(s.text) (\(Format.signed(s.mean - floatSpread[0].mean))\(mark))"
        }
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
            lines.append(
                "\(row.kind): "
                    + row.runs.indices.map { "\(row.runs[$0].run) \(cell($0, in: row))" }.joined(
                        separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    public func markdown() -> String {
        var out = "# QShape comparison\n\nRuns: " + runs.map { "`\($0)`" }.joined(separator: ", ") + "\n\n"
        out += "## Config differences\n\n"
        if configDifferences.isEmpty {
            out += "None.\n"
        } else {
            out +=
                "| key | " + runs.joined(separator: " | ") + " |\n|---|" + runs.map { _ in "---|" }.joined()
                + "\n"
            for k in configDifferences.keys.sorted() {
                out +=
                    "| `\(k)` | " + configDifferences[k]!.map { "`\($0)`" }.joined(separator: " | ") + " |\n"
            }
        }
        out +=
            "\n## Accuracy by bit width\n\n\(Comparison.accuracyNote) In brackets the change from the first run with that figure.\(spreadNote)\n\n"
        out += "| | " + runs.joined(separator: " | ") + " |\n|---|" + runs.map { _ in "---|" }.joined() + "\n"
        out += "| float | " + floatCells().joined(separator: " | ") + " |\n"
        for row in accuracy {
            out +=
                "| \(row.kind) | " + row.runs.indices.map { cell($0, in: row) }.joined(separator: " | ")
                + " |\n"
        }
        if deployment {
            out +=
                "\n## Deployment (exported C)\n\nFlash of the weights, biases, multipliers and shifts / RAM of the activation buffers.\n\n"
            out +=
                "| weights | " + runs.joined(separator: " | ") + " |\n|---|"
                + runs.map { _ in "---|" }.joined() + "\n"
            for row in accuracy {
                out += "| \(row.kind) | " + row.runs.map(deploymentCell).joined(separator: " | ") + " |\n"
            }
        }
        out +=
            "\n## Layers\n\n| layer | run | skewness | kurtosis | max\\|w\\|/σ | SQNR (dB) |\n|---|---|---|---|---|---|\n"
        for l in layers {
            for s in l.runs {
                out +=
                    "| \(l.name) | \(s.run) | \(Format.num(s.skewness)) | \(Format.num(s.kurtosis)) | \(Format.num(s.maxAbsOverStd, 2)) | \(Format.db(s.sqnrDb)) @\(s.bits)b |\n"
            }
        }
        return out
    }

    public func html(_ reports: [Report]) -> String {
        var b =
            "<h1>QShape comparison</h1><p>"
            + runs.map { "<code>\(escape($0))</code>" }.joined(separator: ", ") + "</p>"
        b += "<h2>Config differences</h2>"
        b +=
            configDifferences.isEmpty
            ? "<p>None.</p>"
            : table(
                ["key"] + runs,
                configDifferences.keys.sorted().map { k in
                    ["<code>\(escape(k))</code>"] + configDifferences[k]!.map { "<code>\(escape($0))</code>" }
                })
        b +=
            "<h2>Accuracy by bit width</h2><p>\(escape(Comparison.accuracyNote)) In brackets the change from the first run with that figure.\(escape(spreadNote))</p>"
        b += table(
            [""] + runs,
            [["float"] + floatCells()]
                + accuracy.map { row in
                    [escape(row.kind)]
                        + row.runs.indices.map { i in
                            let text = cell(i, in: row)
                            // A change within the spread (†) is not coloured as a gain or a loss.
                            guard text.contains("("), !text.contains("†"), let d = row.runs[i].delta else {
                                return text
                            }
                            return "<span class=\"\(d >= 0 ? "pos" : "neg")\">\(text)</span>"
                        }
                })
        if let chart = accuracyChart() { b += "<figure>\(chart)</figure>" }
        if deployment {
            b +=
                "<h2>Deployment (exported C)</h2><p>Flash of the weights, biases, multipliers and shifts / RAM of the activation buffers.</p>"
            b += table([""] + runs, accuracy.map { row in [escape(row.kind)] + row.runs.map(deploymentCell) })
        }
        b += layersSection(reports)
        return page(title: "QShape comparison", body: b)
    }

    /// Each layer's statistics in every run, and its histograms side by side.
    func layersSection(_ reports: [Report]) -> String {
        var b = ""
        b += "<h2>Layers</h2>"
        b += table(
            ["layer", "run", "skewness", "kurtosis", "max|w|/σ", "SQNR (dB)"],
            layers.flatMap { l in
                l.runs.map {
                    [
                        escape(l.name), escape($0.run), Format.num($0.skewness), Format.num($0.kurtosis),
                        Format.num($0.maxAbsOverStd, 2), "\(Format.db($0.sqnrDb)) @\($0.bits)b"
                    ]
                }
            }, leftColumns: 2)
        // One histogram per column: a column of seeds shows its first run's weights.
        let shown = zip(groups, runs).compactMap { g, column in
            reports.first { $0.run == g[0] }.map { (column: column, report: $0) }
        }
        let seeded = groups.contains { $0.count > 1 } ? " (of a column of seeds, its first run)" : ""
        if let first = shown.first?.report {
            b += "<div class=\"grid\">"
            for l in first.layers {
                let runs = shown.compactMap { c in
                    c.report.layers.first { $0.name == l.name }.map { (name: c.column, layer: $0) }
                }
                let levels = runs.map {
                    "\(escape($0.name)) \($0.layer.levelsUsed) of \(2 * $0.layer.gridLevels + 1)"
                }
                b +=
                    "<figure>\(first.histogramChart(l, runs: runs))<figcaption>\(escape(l.name)): final weights of each run\(seeded) on a log count axis, solid lines at each run's ±max|w|, which sets its \(l.bits)-bit grid; levels used: \(levels.joined(separator: ", ")).</figcaption></figure>"
            }
            b += "</div>"
        }
        return b
    }

    func accuracyChart() -> String? {
        // Mixed-precision rows ("W8·4·4") have no place on a bits axis; the table shows them.
        let accuracy = self.accuracy.filter { !$0.kind.contains("·") }
        guard !accuracy.isEmpty else { return nil }
        let bits = accuracy.map { Double($0.bits) }
        let values =
            accuracy.flatMap { row in
                row.runs.flatMap { r in
                    r.value.map { [$0 - (r.spread?.sd ?? 0), $0 + (r.spread?.sd ?? 0)] } ?? []
                }
            } + floatAccuracy
        var c = Chart(
            title: "Accuracy by weight bit width", xLabel: "weight bits", yLabel: "test accuracy (%)",
            x: (bits.min()!, bits.max()!), y: (max(0, values.min()! - 2), min(100, values.max()! + 1)))
        c.integerXTicks = true
        var legend: [(String, String)] = []
        for (i, run) in runs.enumerated() {
            let color = Chart.palette[i % Chart.palette.count]
            let pts = accuracy.sorted { $0.bits < $1.bits }.compactMap { row in
                row.runs[i].value.map { (Double(row.bits), $0) }
            }
            c.measuredLine(pts, color: color, label: run)
            // A column of seeds: ± one standard deviation at each width.
            c.errorBars(
                accuracy.compactMap { row in
                    row.runs[i].spread.flatMap { s in s.sd.map { (Double(row.bits), s.mean, $0) } }
                }, color: color)
            legend.append((run, color))
        }
        return c.render(legend: legend)
    }
}
