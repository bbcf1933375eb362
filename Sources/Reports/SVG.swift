// Small inline-SVG charts: axes with ticks, lines, step histograms and bars.
import Foundation

/// Small inline-SVG charts: axes with labelled ticks, line series, step histograms and bars.
/// Everything is plain SVG 1.1 with system fonts, so a report needs no network and prints well.
struct Chart {
    var width = 640.0, height = 300.0
    var left = 64.0, right = 16.0, top = 28.0, bottom = 48.0
    var title: String
    var xLabel: String, yLabel: String
    var xRange: (Double, Double), yRange: (Double, Double)
    /// Ticks on the x axis at whole numbers only (epochs, bit widths).
    var integerXTicks = false
    private var body = ""

    static let palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"
    ]

    init(title: String, xLabel: String, yLabel: String, x: (Double, Double), y: (Double, Double)) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel
        let pad = { (r: (Double, Double)) -> (Double, Double) in r.0 == r.1 ? (r.0 - 1, r.1 + 1) : r }
        xRange = pad(x); yRange = pad(y)
    }

    func px(_ x: Double) -> Double { left + (x - xRange.0) / (xRange.1 - xRange.0) * (width - left - right) }
    func py(_ y: Double) -> Double {
        let (lo, hi, v) = logY ? (ly(yRange.0), ly(yRange.1), ly(y)) : (yRange.0, yRange.1, y)
        return height - bottom - (v - lo) / (hi - lo) * (height - top - bottom)
    }

    /// The y axis as log₁₀(1 + y) (counts: a single weight still shows), ticked at 0, 1, 10, 100…
    var logY = false
    private func ly(_ y: Double) -> Double { log10(1 + max(0, y)) }

    mutating func line(
        _ points: [(Double, Double)], color: String, dashed: Bool = false, label: String? = nil
    ) {
        guard !points.isEmpty else { return }
        let d = points.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
        body +=
            "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dashed ? " stroke-dasharray=\"5,3\"" : "") points=\"\(d)\">"
        body += label.map { "<title>\(escape($0))</title>" } ?? ""
        body += "</polyline>"
        for p in points where points.count <= 40 {
            body += String(
                format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%@\"/>", px(p.0), py(p.1), color)
        }
    }

    /// A series measured at whole-number x (bit widths): solid where neighbours are one apart,
    /// a faint dotted line across x values that were not measured, a dot at every measurement.
    mutating func measuredLine(
        _ points: [(Double, Double)], color: String, dashed: Bool = false, label: String
    ) {
        let sorted = points.sorted { $0.0 < $1.0 }
        var run: [(Double, Double)] = []
        for p in sorted {
            if let last = run.last, p.0 - last.0 > 1 {
                line(run, color: color, dashed: dashed, label: label)
                let gap = String(format: "%.1f,%.1f %.1f,%.1f", px(last.0), py(last.1), px(p.0), py(p.1))
                body +=
                    "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1\" stroke-opacity=\"0.5\" stroke-dasharray=\"1,4\" points=\"\(gap)\"><title>not measured between \(Int(last.0)) and \(Int(p.0)) bits</title></polyline>"
                run = []
            }
            run.append(p)
        }
        line(run, color: color, dashed: dashed, label: label)
    }

    /// A histogram as a filled step outline over `edges`.
    mutating func histogram(edges: [Double], counts: [Int], color: String, opacity: Double) {
        var d = String(format: "M%.1f,%.1f", px(edges[0]), py(0))
        for (i, c) in counts.enumerated() {
            d += String(
                format: " L%.1f,%.1f L%.1f,%.1f", px(edges[i]), py(Double(c)), px(edges[i + 1]), py(Double(c))
            )
        }
        d += String(format: " L%.1f,%.1f Z", px(edges[edges.count - 1]), py(0))
        body +=
            "<path d=\"\(d)\" fill=\"\(color)\" fill-opacity=\"\(opacity)\" stroke=\"\(color)\" stroke-width=\"1\"/>"
    }

    /// Dots (a scatter), each with a tooltip; `label` also writes it beside the dot.
    mutating func dots(
        _ points: [(x: Double, y: Double, tip: String)], color: String, radius: Double = 3,
        label: Bool = false
    ) {
        for p in points {
            body += String(
                format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%@\"><title>%@</title></circle>",
                px(p.x), py(p.y), radius, color, escape(p.tip) as NSString)
            if label {
                body += String(
                    format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%@\">%@</text>",
                    px(p.x) + radius + 2, py(p.y) + 3, color, escape(p.tip) as NSString)
            }
        }
    }

    /// Whiskers from y − e to y + e at each point (± one standard deviation), clipped to the axes.
    mutating func errorBars(_ points: [(x: Double, y: Double, e: Double)], color: String) {
        for p in points where p.e > 0 {
            let lo = py(max(yRange.0, p.y - p.e)), hi = py(min(yRange.1, p.y + p.e)), x = px(p.x)
            body += String(
                format:
                    "<path d=\"M%.1f,%.1f V%.1f M%.1f,%.1f H%.1f M%.1f,%.1f H%.1f\" stroke=\"%@\" stroke-width=\"1.2\" fill=\"none\"><title>± %.2f (1 sd)</title></path>",
                x, lo, hi, x - 4, lo, x + 4, x - 4, hi, x + 4, color, p.e)
        }
    }

    mutating func verticalMarks(_ xs: [Double], color: String, dashed: Bool = true) {
        for x in xs where x >= xRange.0 && x <= xRange.1 {
            body += String(
                format:
                    "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%@\" stroke-width=\"%@\"%@/>",
                px(x), px(x), top, height - bottom, color, dashed ? "0.8" : "1.4",
                dashed ? " stroke-dasharray=\"2,2\"" : "")
        }
    }

    mutating func bars(
        _ values: [(String, Double)], color: String, offset: Double = 0, widthFraction: Double = 0.7
    ) {
        let n = Double(values.count), slot = (width - left - right) / max(1, n), w = slot * widthFraction
        for (i, (name, v)) in values.enumerated() {
            let x = left + slot * Double(i) + (slot - w) / 2 + offset * w
            let y0 = py(max(yRange.0, 0)), y1 = py(v)
            body += String(
                format:
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>%@: %.1f</title></rect>",
                x, min(y0, y1), w, abs(y0 - y1), color, escape(name) as NSString, v)
        }
    }

    mutating func categoryLabels(_ names: [String]) {
        let slot = (width - left - right) / Double(max(1, names.count))
        for (i, n) in names.enumerated() {
            body += String(
                format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%@</text>",
                left + slot * (Double(i) + 0.5), height - bottom + 16, escape(n) as NSString)
        }
    }

    /// The legend's items in rows that fit the plot's width (a long run name gets a row of its own
    /// rather than being cut), each item's x position.
    func legendRows(_ items: [(String, String)]) -> [[(x: Double, label: String, color: String)]] {
        var rows: [[(x: Double, label: String, color: String)]] = [[]], x = left + 8
        for (label, color) in items {
            let w = 24 + Double(label.count) * 6.5
            if x + w > width - right, !rows[rows.count - 1].isEmpty {
                rows.append([])
                x = left + 8
            }
            rows[rows.count - 1].append((x, label, color))
            x += w
        }
        return rows
    }

    /// One row above the plot; more rows below the axis label (the SVG grows by `extra`).
    func legend(_ items: [(String, String)]) -> (svg: String, extra: Double) {
        let rows = legendRows(items)
        let below = rows.count > 1
        var s = ""
        for (r, row) in rows.enumerated() {
            let y = below ? height + 6 + 16 * Double(r) : 8
            for item in row {
                s += String(
                    format:
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"4\" fill=\"%@\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%@</text>",
                    item.x, y, item.color, item.x + 16, y + 6, escape(item.label) as NSString)
            }
        }
        return (s, below ? 16 * Double(rows.count) + 6 : 0)
    }

    /// Round-numbered ticks; `integer` keeps them on whole numbers (epochs, bit widths).
    func ticks(_ lo: Double, _ hi: Double, count: Int = 5, integer: Bool = false) -> [Double] {
        let span = hi - lo, raw = span / Double(count)
        let mag = pow(10, floor(log10(raw)))
        var step = [1, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? raw
        if integer { step = max(1, step.rounded(.up)) }
        var t = (lo / step).rounded(.up) * step, out: [Double] = []
        while t <= hi + step * 1e-9 { out.append(t); t += step }
        return out
    }

    func render(legend items: [(String, String)] = [], xTicks: Bool = true) -> String {
        let (legendSVG, extra) = legend(items)
        var s =
            "<svg viewBox=\"0 0 \(Int(width)) \(Int(height + extra))\" width=\"100%\" role=\"img\" font-family=\"system-ui, sans-serif\">"
        s += "<title>\(escape(title))</title>"
        s += String(
            format:
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#999\"/>",
            left, top, width - left - right, height - top - bottom)
        let yTicks =
            logY
            ? [0] + (0...9).map { pow(10, Double($0)) }.filter { $0 <= yRange.1 } : ticks(yRange.0, yRange.1)
        for t in yTicks {
            s += String(
                format:
                    "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%@</text>",
                left, width - right, py(t), py(t), left - 4, py(t) + 4, label(t) as NSString)
        }
        if xTicks {
            for t in ticks(xRange.0, xRange.1, count: 6, integer: integerXTicks) {
                s += String(
                    format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%@</text>",
                    px(t), height - bottom + 16, label(t) as NSString)
            }
        }
        s += String(
            format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">%@</text>",
            left + (width - left - right) / 2, height - 10, escape(xLabel) as NSString)
        s += String(
            format:
                "<text transform=\"translate(14,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">%@</text>",
            top + (height - top - bottom) / 2, escape(yLabel) as NSString)
        s += body + legendSVG + "</svg>"
        return s
    }

    func label(_ v: Double) -> String {
        if v == 0 { return "0" }
        for (unit, suffix) in [(1e6, "M"), (1e3, "k")]
        where abs(v) >= unit && v.truncatingRemainder(dividingBy: unit) == 0 {
            return "\(Int(v / unit))\(suffix)"
        }
        if abs(v) >= 1000 || abs(v) < 0.01 { return String(format: "%.2g", v) }
        return v == v.rounded() ? String(Int(v)) : String(format: "%.3g", v)
    }
}

func escape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}
