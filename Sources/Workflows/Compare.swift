// `qshape compare`: the comparison of finished runs written as compare.json, .md and .html.
import Foundation
import DataIO
import Reports

/// `qshape compare`: the side-by-side comparison of finished runs (compare.json, .md, .html).
public enum CompareWorkflow {
    /// compare.json, compare.md and compare.html in `dir`.
    public static func write(_ c: Comparison, reports: [Report], to dir: String) throws {
        try writeAtomically(try c.json(), to: "\(dir)/compare.json")
        try writeAtomically(c.markdown(), to: "\(dir)/compare.md")
        try writeAtomically(c.html(reports), to: "\(dir)/compare.html")
    }

    /// Writes a rendered comparison to a file, atomically.
    public static func save(_ text: String, to path: String) throws { try writeAtomically(text, to: path) }

    public static func render(_ paths: [String], format: String) throws -> String {
        let reports = try ReportWorkflow.collect(paths)
        guard reports.count >= 2 || paths.count == 1 else { throw RunError("compare needs two or more runs") }
        let c = Comparison(reports, defaults: ReportWorkflow.effectiveDefaults)
        switch format {
        case "json": return try c.json()
        case "html": return c.html(reports)
        case "headline": return c.headline() + "\n"
        default: return c.markdown()
        }
    }
}
