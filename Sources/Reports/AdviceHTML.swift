// advice.md and advice.html: the sensitivity by layer and width, the front of flash against
// accuracy with the uniform widths beside it, and the verified recommendation.
import Foundation

extension Advice {
    /// The narrowest widths analysed (up to three): where the layers differ.
    var chartWidths: [Int] { Array((layers.first?.sensitivity.map(\.bits) ?? []).sorted().prefix(3)) }

    /// Accuracy with every layer at `bits`, simulated on the analysis images (nil if not evaluated).
    func uniformSimulated(_ bits: Int) -> Double? {
        front.first { $0.uniform && $0.bits.first == bits }?.simulated
    }

    /// Grouped bars per layer: the drop with only this layer quantised, or (`recovered`) what
    /// keeping this layer float gains when every other layer is quantised.
    func sensitivityChart(recovered: Bool) -> String {
        let widths = chartWidths
        let values = widths.map { b in
            layers.map { l -> (String, Double) in
                let s = l.sensitivity.first { $0.bits == b }!
                let v =
                    recovered
                    ? s.allButThisQuantized - (uniformSimulated(b) ?? s.allButThisQuantized)
                    : reference - s.onlyThisQuantized
                return ("\(l.name) at \(b) bits", max(0, v))
            }
        }
        let top = max(0.5, values.flatMap { $0.map(\.1) }.max() ?? 0.5)
        var c = Chart(
            title: recovered
                ? "Accuracy regained by keeping one layer float, the others quantised"
                : "Accuracy lost by quantising one layer alone",
            xLabel: "layer", yLabel: "accuracy points", x: (0, 1), y: (0, top * 1.1))
        let w = 0.8 / Double(max(1, widths.count))
        for (k, v) in values.enumerated() {
            c.bars(
                v, color: Chart.palette[k % Chart.palette.count],
                offset: Double(k) - Double(widths.count - 1) / 2, widthFraction: w)
        }
        c.categoryLabels(layers.map(\.name))
        return c.render(
            legend: widths.enumerated().map { ("\($1) bits", Chart.palette[$0 % Chart.palette.count]) },
            xTicks: false)
    }

    /// Weight bytes against simulated accuracy: every point evaluated, the uniform widths, the
    /// recommendation and the budget.
    func frontChart() -> String {
        let floor = max(0, reference - 10)
        let shown = front.filter { $0.simulated >= floor }
        let kib = { (p: Point) in Double(p.weightBytes) / 1024 }
        let xs = shown.map(kib) + [Double(recommendation.weightBytes) / 1024]
        var c = Chart(
            title: "Flash against accuracy (simulated on \(images) test images)",
            xLabel: "weight flash (KiB)",
            yLabel: "accuracy (%)", x: (0, (xs.max() ?? 1) * 1.05), y: (floor, reference + 1))
        c.line(
            [(0, reference), ((xs.max() ?? 1) * 1.05, reference)], color: "#555", dashed: true,
            label: "float weights")
        if let b = flashBudget { c.verticalMarks([Double(b) / 1024], color: "#ff7f0e") }
        var best = -Double.infinity, frontier: [(Double, Double)] = []
        for p in shown.sorted(by: { $0.weightBytes < $1.weightBytes }) where p.simulated > best {
            best = p.simulated
            frontier.append((kib(p), p.simulated))
        }
        c.line(frontier, color: Chart.palette[0], label: "best accuracy at each flash")
        c.dots(
            shown.filter { !$0.uniform }.map {
                (kib($0), $0.simulated, "\(Advice.label($0.bits)): \(Format.pct($0.simulated))")
            },
            color: Chart.palette[0], radius: 2.5)
        // One label per flash size: the widths that share a storage format sit on one x.
        let uniform = Dictionary(grouping: shown.filter(\.uniform), by: \.weightBytes)
        for (_, group) in uniform.sorted(by: { $0.key < $1.key }) {
            let top = group.max { $0.simulated < $1.simulated }!
            c.dots(
                group.map { (kib($0), $0.simulated, Advice.label($0.bits)) }, color: Chart.palette[1],
                radius: 3.5)
            c.dots(
                [(kib(top), top.simulated, group.map { Advice.label($0.bits) }.joined(separator: "/"))],
                color: Chart.palette[1], radius: 3.5, label: true)
        }
        if let r = front.first(where: { $0.bits == recommendation.bits }), r.simulated >= floor {
            c.dots(
                [(kib(r), r.simulated, "recommended \(Advice.label(r.bits))")], color: Chart.palette[2],
                radius: 5, label: true)
        }
        return c.render(
            legend: [
                ("mixed widths", Chart.palette[0]), ("uniform", Chart.palette[1]),
                ("recommended", Chart.palette[2])
            ]
                + (flashBudget == nil ? [] : [("budget", "#ff7f0e")]))
    }
}

extension Advice {
    var goal: String {
        flashBudget.map { "the most accurate per-layer widths within \(Format.kib($0)) of weights" }
            ?? "the least flash within \(Format.num(maxDrop ?? 0, 2)) points of float weights"
    }

    /// Rows of the sensitivity table: per layer, its statistics and "only/all-but" per width.
    var sensitivityRows: [[String]] {
        layers.map { l in
            [
                l.name, "\(l.index)", "\(l.weights)", Format.pct(100 * l.flashShare),
                Format.num(l.kurtosis, 2),
                Format.num(l.maxAbsOverStd, 1), Format.db(l.activationSQNR)
            ]
                + l.sensitivity.map {
                    "\(Format.pct($0.onlyThisQuantized)) / \(Format.pct($0.allButThisQuantized)) (\(Format.num(100 * $0.zeroFraction, 0))% 0)"
                }
        }
    }

    var sensitivityHeader: [String] {
        ["layer", "index", "weights", "flash %", "kurtosis", "max|w|/σ", "act. SQNR (dB)"]
            + (layers.first?.sensitivity.map { "W\($0.bits)" } ?? [])
    }

    var verifiedRows: [[String]] {
        ([recommendation] + uniform).enumerated().map { k, v in
            [
                (k == 0 ? "recommended " : "uniform ") + Advice.label(v.bits), Format.kib(v.weightBytes),
                Format.pct(v.simulated), Format.pct(v.integer), Format.signed(v.integer - floatAccuracy)
            ]
        }
    }

    static let verifiedHeader = [
        "widths", "weight flash", "predicted (simulation)", "integer engine", "vs float"
    ]

    public func markdown() -> String {
        func row(_ cells: [String]) -> String { "| " + cells.joined(separator: " | ") + " |\n" }
        func header(_ cells: [String]) -> String { row(cells) + row(cells.map { _ in "---" }) }
        var s = "# qshape advise: \(weights)\n\n"
        s += "Goal: \(goal). Float accuracy \(Format.pct(floatAccuracy))% on \(testImages) test images; "
        s +=
            "float weights with \(activationBits)-bit activations \(Format.pct(reference))% on the \(images) analysed.\n\n"
        s += "## Recommendation, verified on all \(testImages) test images\n\n"
        s += header(Advice.verifiedHeader) + verifiedRows.map(row).joined()
        s += "\n```yaml\n\(fragment)```\n\n## Sensitivity\n\n"
        s +=
            "Accuracy (%) with only this layer at that width / with every layer but this one at it, on \(images) test images; "
        s += "the share of the layer's weights that round to zero in brackets.\n\n"
        s += header(sensitivityHeader) + sensitivityRows.map(row).joined()
        s +=
            "\n## Front\n\nEach point's widths simulated as a whole; \"predicted\" adds the single-layer drops.\n\n"
        s += header(["widths", "weight flash", "predicted", "simulated"])
        s += front.map {
            row([
                Advice.label($0.bits), Format.kib($0.weightBytes), Format.pct($0.predicted),
                Format.pct($0.simulated)
            ])
        }.joined()
        if let p = shaping {
            s +=
                "\n## Shaping probe\n\n\(p.steps) fine-tuning steps each at a tenth of the learning rate on layers "
            s += p.layers.map(String.init).joined(separator: ", ") + "; each result searched again.\n\n"
            s += header(Advice.probeHeader) + probeRows(p).map(row).joined()
            s += "\nInteger engine, all \(testImages) test images: control \(Advice.label(p.control.bits)) "
            s +=
                "\(Format.pct(p.control.integer))%, best probe \(Advice.label(p.best.bits)) \(Format.pct(p.best.integer))%: "
            s += p.verdict + ".\n"
            if let f = p.fragment { s += "\n```yaml\n\(f)```\n" }
        }
        return s
    }

    public func html() -> String {
        var body =
            "<h1>qshape advise</h1><p>\(escape(weights)): \(escape(goal)). Float accuracy \(Format.pct(floatAccuracy))% on \(testImages) test images; float weights with \(activationBits)-bit activations \(Format.pct(reference))% on the \(images) analysed (\(Format.num(seconds, 1)) s).</p>"
        body += "<h2>Recommendation, verified on all \(testImages) test images</h2>"
        body += table(Advice.verifiedHeader, verifiedRows.map { $0.map(escape) })
        body += "<pre>\(escape(fragment))</pre>"
        body +=
            "<h2>Flash against accuracy</h2><figure>\(frontChart())<figcaption>Blue: per-layer widths (each simulated as a whole); red: one width for every layer; green: the recommendation\(flashBudget == nil ? "" : "; dashed orange: the budget").</figcaption></figure>"
        body +=
            "<h2>Sensitivity</h2><div class=\"grid\"><figure>\(sensitivityChart(recovered: false))</figure><figure>\(sensitivityChart(recovered: true))</figure></div>"
        body +=
            "<p>Accuracy (%) with only this layer at the width / with every layer but this one at it, on \(images) test images; the share of weights rounded to zero in brackets.</p>"
        body += table(sensitivityHeader, sensitivityRows.map { $0.map(escape) }, leftColumns: 1)
        body += "<h2>Front</h2>"
        body += table(
            ["widths", "weight flash", "predicted", "simulated"],
            front.map {
                [
                    Advice.label($0.bits), Format.kib($0.weightBytes), Format.pct($0.predicted),
                    Format.pct($0.simulated)
                ]
            })
        if let p = shaping {
            body +=
                "<h2>Shaping probe</h2><p>\(p.steps) fine-tuning steps each at a tenth of the learning rate on layers \(p.layers.map(String.init).joined(separator: ", ")); each result searched again.</p>"
            body += table(Advice.probeHeader, probeRows(p).map { $0.map(escape) })
            body +=
                "<p>Integer engine, all \(testImages) test images: control \(Advice.label(p.control.bits)) \(Format.pct(p.control.integer))%, best probe \(Advice.label(p.best.bits)) \(Format.pct(p.best.integer))%: \(escape(p.verdict)).</p>"
            if let f = p.fragment { body += "<pre>\(escape(f))</pre>" }
        }
        return page(title: "qshape advise", body: body)
    }
}

extension Advice {
    static let probeHeader = [
        "terms", "λ", "kurtosis after", "float weights", "widths", "accuracy (simulation)"
    ]

    func probeRows(_ p: ShapingAdvice) -> [[String]] {
        p.probes.map {
            [
                $0.terms == "none" ? "none (control)" : $0.terms,
                $0.terms == "none" ? "–" : String(format: "%g", $0.lambda),
                Format.num($0.kurtosis, 2), Format.pct($0.reference), Advice.label($0.bits),
                Format.pct($0.simulated)
            ]
        }
    }
}
