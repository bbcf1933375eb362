// report.html and the comparison page: self-contained HTML with inline SVG charts.
import Foundation

/// A self-contained HTML page: inline CSS and SVG, no scripts, fonts or links; well-formed XML.
func page(title: String, body: String) -> String {
    """
    <!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"/><meta name="viewport" content="width=device-width, initial-scale=1"/>
    <title>\(escape(title))</title>
    <style>
    body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }
    h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
    table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
    th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
    td.l, th.l { text-align: left; } .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 1em; }
    figure { margin: 0; max-width: 680px; } figcaption { font-size: 0.85em; color: #555; } .pos { color: #1a7f37; } .neg { color: #c62828; }
    @media print { .grid { grid-template-columns: 1fr 1fr; } body { max-width: none; } }
    </style></head><body>
    \(body)
    </body></html>

    """
}

func table(_ header: [String], _ rows: [[String]], leftColumns: Int = 1) -> String {
    var s =
        "<table><tr>"
        + header.enumerated().map {
            "<th\($0.offset < leftColumns ? " class=\"l\"" : "")>\(escape($0.element))</th>"
        }.joined() + "</tr>"
    for r in rows {
        s +=
            "<tr>"
            + r.enumerated().map { "<td\($0.offset < leftColumns ? " class=\"l\"" : "")>\($0.element)</td>" }
            .joined() + "</tr>"
    }
    return s + "</table>"
}

extension Report {
    /// The accuracy-by-bits chart: float as a dashed line, simulated and integer by bit width.
    func accuracyChart() -> String? {
        // One width for every layer only: a mixed-precision row has no place on a bits axis.
        guard var a = accuracy else { return nil }
        a.rows = a.rows.filter { $0.weights == nil }
        guard !a.rows.isEmpty else { return nil }
        let bits = a.rows.map { Double($0.bits) }
        let values = a.rows.flatMap { [$0.simulated, $0.integer ?? $0.simulated] } + [a.float]
        var c = Chart(
            title: "Accuracy by weight bit width", xLabel: "weight bits", yLabel: "test accuracy (%)",
            x: (bits.min()!, bits.max()!), y: (max(0, values.min()! - 2), min(100, values.max()! + 1)))
        c.integerXTicks = true
        let sorted = a.rows.sorted { $0.bits < $1.bits }
        c.line([(bits.min()!, a.float), (bits.max()!, a.float)], color: "#555", dashed: true, label: "float")
        c.measuredLine(
            sorted.map { (Double($0.bits), $0.simulated) }, color: Chart.palette[0], label: "simulated")
        var legend = [("float", "#555"), ("simulated", Chart.palette[0])]
        if sorted.allSatisfy({ $0.integer != nil }) {
            c.measuredLine(
                sorted.map { (Double($0.bits), $0.integer!) }, color: Chart.palette[1], dashed: true,
                label: "integer")
            legend.append(("integer engine", Chart.palette[1]))
        }
        return c.render(legend: legend)
    }

    /// One layer's weights: the initial and the final distribution on a log count axis (so the few
    /// weights at the extremes, which set the seed quantiser's step, show), ±max|w| and the integer
    /// grid marked. With `runs`, each run's final weights and its ±max|w| in its colour.
    func histogramChart(_ l: Layer, runs: [(name: String, layer: Layer)]? = nil) -> String {
        let h = l.histogram
        let series: [(String, [Int], [Double])] =
            runs.map { $0.map { ($0.name, $0.layer.histogram.final, $0.layer.histogram.edges) } }
            ?? ([h.initial.map { ("initial", $0, h.edges) }, ("final", h.final, h.edges)].compactMap { $0 })
        let peak = Double(series.flatMap(\.1).max() ?? 1)
        let span = series.flatMap(\.2).map(abs).max() ?? 1
        var c = Chart(
            title: "\(l.name) weights", xLabel: "weight value", yLabel: "count (log scale)",
            x: (-span * 1.04, span * 1.04), y: (0, peak * 1.5))
        c.logY = true
        var legend: [(String, String)] = []
        for (i, (name, counts, edges)) in series.enumerated() {
            let color =
                runs == nil
                ? (name == "initial" ? "#999999" : Chart.palette[0]) : Chart.palette[i % Chart.palette.count]
            c.histogram(edges: edges, counts: counts, color: color, opacity: 0.35)
            legend.append((name, color))
        }
        if let runs {
            for (i, r) in runs.enumerated() {
                let m = r.layer.maxAbs
                c.verticalMarks([-m, m], color: Chart.palette[i % Chart.palette.count], dashed: false)
            }
            legend.append(("±max|w| of each run", "#555"))
        } else {
            if l.gridLevels <= 64 {
                c.verticalMarks(
                    (-l.gridLevels...l.gridLevels).map { Double($0) * l.gridStep }, color: "#d62728")
                legend.append(("\(l.bits)-bit grid", "#d62728"))
            }
            c.verticalMarks([-l.maxAbs, l.maxAbs], color: "#222", dashed: false)
            legend.append(("±max|w|", "#222"))
        }
        return c.render(legend: legend)
    }

    /// Per-layer SQNR bars: weights at the report's bit width, and activations when measured.
    func sqnrChart() -> String {
        let w = layers.map { ($0.name, $0.sqnrDb) }, a = layers.map { ($0.name, $0.activationSqnr ?? 0) }
        let top = (w + a).map(\.1).max() ?? 1
        var c = Chart(
            title: "SQNR per layer", xLabel: "layer", yLabel: "SQNR (dB)", x: (0, 1), y: (0, top * 1.1))
        let hasActivations = layers.contains { $0.activationSqnr != nil }
        c.bars(
            w, color: Chart.palette[0], offset: hasActivations ? -0.25 : 0,
            widthFraction: hasActivations ? 0.35 : 0.6)
        if hasActivations { c.bars(a, color: Chart.palette[2], offset: 0.25, widthFraction: 0.35) }
        c.categoryLabels(layers.map(\.name))
        var legend = [("weights @\(layers.first?.bits ?? 8) bits", Chart.palette[0])]
        if hasActivations { legend.append(("activations", Chart.palette[2])) }
        return c.render(legend: legend, xTicks: false)
    }

    /// Curves over epochs: one series per name.
    func curveChart(title: String, yLabel: String, series: [(String, [(Double, Double)])]) -> String? {
        let points = series.flatMap(\.1)
        guard !points.isEmpty else { return nil }
        let xs = points.map(\.0), ys = points.map(\.1)
        let lo = ys.min()!, hi = ys.max()!, pad = max((hi - lo) * 0.08, 1e-6)
        var c = Chart(
            title: title, xLabel: "epoch", yLabel: yLabel, x: (xs.min()!, xs.max()!), y: (lo - pad, hi + pad))
        c.integerXTicks = true
        var legend: [(String, String)] = []
        for (i, (name, pts)) in series.enumerated() {
            let color = Chart.palette[i % Chart.palette.count]
            c.line(pts, color: color, label: name)
            legend.append((name, color))
        }
        return c.render(legend: legend)
    }

    func trainingCharts() -> [String] {
        let e = training.epochs
        func pts(_ f: (Epoch) -> Double?) -> [(Double, Double)] {
            e.compactMap { x in f(x).map { (Double(x.epoch), $0) } }
        }
        var charts: [String?] = [
            curveChart(title: "Loss", yLabel: "training loss", series: [("loss", pts { $0.loss })]),
            curveChart(
                title: "Accuracy", yLabel: "accuracy (%)",
                series: [("train", pts { $0.trainAccuracy }), ("test", pts { $0.testAccuracy })])
        ]
        let penalties = Set(e.flatMap { $0.penalties?.keys.map { $0 } ?? [] }).sorted()
        if !penalties.isEmpty {
            charts.append(
                curveChart(
                    title: "Penalties", yLabel: "weighted penalty",
                    series: penalties.map { p in (p, pts { $0.penalties?[p] }) }))
        }
        let shaped = Set(e.flatMap { $0.layers?.keys.map { $0 } ?? [] }).sorted()
        for stat in ["kurtosis", "skewness"] where !shaped.isEmpty {
            charts.append(
                curveChart(
                    title: "\(stat.capitalized) per layer", yLabel: stat,
                    series: shaped.map { l in (l, pts { $0.layers?[l]?[stat] }) }))
        }
        return charts.compactMap { $0 }
    }

    /// report.html: the same numbers as report.md, with the figures.
    public func html() -> String {
        var b = "<h1>QShape report: \(escape(run))</h1>"
        b +=
            training.epochs.isEmpty
            ? "<p>Float test accuracy <b>\(Format.pct(training.testAccuracy))%</b>; not trained here: <code>qshape quantize</code> converted the weights in model.safetensors.</p>"
            : "<p>Final test accuracy <b>\(Format.pct(training.testAccuracy))%</b> after \(training.epochs.count) epochs (\(String(format: "%.1f", training.totalSeconds)) s).</p>"
        b += accuracySection() + layersSection() + trainingSection() + configSection()
        return page(title: "QShape report: \(run)", body: b)
    }

    /// Accuracy by bit width: the table and the chart.
    func accuracySection() -> String {
        var b = ""
        if let a = accuracy {
            b +=
                "<h2>Accuracy by bit width</h2><p>\(a.weightsOnly ? "Weights quantised, everything else float." : "Weights and activations quantised; integer = the integer engine.")</p>"
            b += table(
                ["quantised", "float", "simulated", "integer", "agreement with float", "C flash", "C RAM"],
                a.rows.map {
                    [
                        escape(a.kind($0)), Format.pct(a.float), Format.pct($0.simulated),
                        Format.pct($0.integer), Format.pct($0.agreement),
                        Format.kib($0.flashBytes), Format.kib($0.ramBytes)
                    ]
                })
            if let chart = accuracyChart() { b += "<figure>\(chart)</figure>" }
        }
        return b
    }

    /// The layers' table, each layer's histogram and the SQNR chart.
    func layersSection() -> String {
        var b = ""
        b += "<h2>Layers</h2>"
        b += table(
            [
                "layer", "shape", "skewness", "kurtosis", "max|w|/σ", "SQNR (dB)", "levels used",
                "act. SQNR (dB)", "acc. bits needed/of"
            ],
            layers.map { l in
                [
                    escape(l.name), l.shape.map(String.init).joined(separator: "×"), Format.num(l.skewness),
                    Format.num(l.kurtosis),
                    Format.num(l.maxAbsOverStd, 2), "\(Format.db(l.sqnrDb)) @\(l.bits)b",
                    "\(l.levelsUsed)/\(2 * l.gridLevels + 1)",
                    Format.db(l.activationSqnr), l.accumulatorText
                ]
            }, leftColumns: 2)
        b +=
            "<div class=\"grid\">"
            + layers.map {
                "<figure>\(histogramChart($0))<figcaption>\(escape($0.name)): initial (grey) and final (blue) weights on a log count axis; solid black lines: ±max|w|, which sets the step; dashed red lines: the \($0.bits)-bit grid (\($0.levelsUsed) of its \(2 * $0.gridLevels + 1) levels used).</figcaption></figure>"
            }.joined()
        b += "<figure>\(sqnrChart())</figure></div>"
        return b
    }

    /// The training curves and the table of epochs (empty for a run not trained here).
    func trainingSection() -> String {
        var b = ""
        if !training.epochs.isEmpty {
            b +=
                "<h2>Training</h2><div class=\"grid\">"
                + trainingCharts().map { "<figure>\($0)</figure>" }.joined() + "</div>"
            b += table(
                ["epoch", "loss", "train", "test", "learning rate"],
                training.epochs.map {
                    [
                        "\($0.epoch)\($0.phase.map { " (\($0))" } ?? "")", Format.num($0.loss, 4),
                        Format.pct($0.trainAccuracy),
                        Format.pct($0.testAccuracy), String(format: "%.3g", $0.learningRate)
                    ]
                })
        }
        return b
    }

    /// The resolved config and the machine.
    func configSection() -> String {
        var b = ""
        b +=
            "<h2>Config</h2>"
            + table(
                ["key", "value"],
                config.keys.sorted().map {
                    ["<code>\(escape($0))</code>", "<code>\(escape(config[$0]!))</code>"]
                }, leftColumns: 2)
        if let machine, !machine.isEmpty {
            b +=
                "<h2>Machine</h2>"
                + table(["", ""], machine.filter { $0.count == 2 }.map { $0.map(escape) }, leftColumns: 2)
        }
        return b
    }
}
