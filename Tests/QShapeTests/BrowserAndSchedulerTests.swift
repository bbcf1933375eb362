// Tests: the reports as a browser shows them (headless Chromium screenshots that must not be
// blank), and Docs/Reports.md's GNU-parallel sweep recipe run as written.
import XCTest
import Foundation
import CZlib

/// What the recipe tests share: the docs' `sh` blocks, a shell with `qshape` on its PATH, and the
/// comparison of two sweeps' runs.
enum Recipes {
    static let data = ["--set", "data.dir=\(Fixtures.fashion)"]
    static let short = ["--set", "training.epochs=1", "--set", "training.max_steps_per_epoch=3"]

    /// `dir` with `Examples` linked in, where the README's and the docs' commands run as written.
    static func workspace(_ dir: String) throws -> String {
        try FileManager.default.createSymbolicLink(
            atPath: "\(dir)/Examples", withDestinationPath: "\(Fixtures.repository)/Examples")
        return dir
    }

    /// The `sh` block of Docs/Reports.md that follows `heading`.
    static func recipe(after heading: String) throws -> String {
        let text = try String(contentsOfFile: "\(Fixtures.repository)/Docs/Reports.md", encoding: .utf8)
        let after = try XCTUnwrap(text.components(separatedBy: heading).dropFirst().first, heading)
        return try XCTUnwrap(
            after.components(separatedBy: "```sh\n").dropFirst().first?.components(separatedBy: "\n```").first
        )
    }

    static func bash(_ script: String, in dir: String) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", script]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = try qshapeExecutable().deletingLastPathComponent().path + ":" + (env["PATH"] ?? "")
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    /// A report's trained weights and accuracies (what sharding must not change).
    static func accuracy(of path: String) throws -> String {
        let obj =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
            as! [String: Any]
        let keep = ["accuracy": obj["accuracy"] ?? NSNull(), "layers": obj["layers"] ?? NSNull()]
        return String(
            decoding: try JSONSerialization.data(withJSONObject: keep, options: [.sortedKeys]), as: UTF8.self)
    }

    /// Both sweep folders hold `count` runs, each with the same report figures.
    static func assertSameRuns(_ a: String, _ b: String, count: Int) throws {
        let runs = try FileManager.default.contentsOfDirectory(atPath: b).filter {
            FileManager.default.fileExists(atPath: "\(b)/\($0)/report.json")
        }
        XCTAssertEqual(runs.count, count)
        for run in runs {
            XCTAssertEqual(
                try accuracy(of: "\(a)/\(run)/report.json"), try accuracy(of: "\(b)/\(run)/report.json"), run)
        }
    }
}

final class BrowserAndSchedulerTests: XCTestCase {
    let data = Recipes.data, short = Recipes.short

    func workspace() throws -> String { try Recipes.workspace(temporaryDirectory(self)) }
    func recipe(after heading: String) throws -> String { try Recipes.recipe(after: heading) }
    func bash(_ script: String, in dir: String) throws -> (status: Int32, output: String) {
        try Recipes.bash(script, in: dir)
    }

    /// The GNU-parallel recipe, as written but for the data and a shorter training, shards a 3×2
    /// sweep over four processes; every run's report equals the same sweep run unsharded.
    func testGNUParallelRecipeMatchesTheUnshardedSweep() throws {
        _ = try requireTool("parallel")
        let dir = try workspace()
        let shortening = (data + short).joined(separator: " ")
        let script = try recipe(after: "GNU parallel on one machine").replacingOccurrences(
            of: "--set training.threads=1", with: "--set training.threads=1 \(shortening)")
        XCTAssertTrue(script.contains("parallel -j 4 qshape sweep"), script)
        let r = try bash("set -e\n" + script, in: dir)
        XCTAssertEqual(r.status, 0, r.output)
        let unsharded = try qshape(
            [
                "sweep", "Examples/fashion-mlp-kurtosis.yaml", "--grid", "shaping.kurtosis.weight=0,0.1,1",
                "--grid", "shaping.kurtosis.target=1.8,3.0", "--set", "training.threads=1", "--out",
                "runs/whole"
            ] + data + short, in: dir)
        XCTAssertEqual(unsharded.status, 0, unsharded.stderr)
        try Recipes.assertSameRuns("\(dir)/runs/kurtosis-sweep", "\(dir)/runs/whole", count: 6)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/runs/kurtosis-sweep/compare.html"))
    }

    /// report.html, a sweep's compare.html with long run names, and advice.html, screenshotted by
    /// headless Chromium: each shows a page (not blank), and the charts carry ink across the width.
    func testReportsRenderInHeadlessChromium() throws {
        let chromium = try requireTool("chromium")
        let dir = try workspace()
        XCTAssertEqual(try qshape(["train", "Examples/fashion-mlp.yaml"] + data + short, in: dir).status, 0)
        let sweep = try qshape(
            [
                "sweep", "Examples/fashion-mlp-kurtosis.yaml", "--grid", "shaping.kurtosis.weight=0,1",
                "--grid", "shaping.skewness.weight=0,1", "--out", "runs/sweep"
            ] + data + short, in: dir)
        XCTAssertEqual(sweep.status, 0, sweep.stderr)
        let advise = try qshape(
            [
                "advise", "Examples/fashion-mlp.yaml", "--weights", "runs/fashion-mlp/model.safetensors",
                "--widths", "8", "4", "2", "--images", "200", "--out", "runs/advice"
            ] + data, in: dir)
        XCTAssertEqual(advise.status, 0, advise.stderr)
        for page in ["runs/fashion-mlp/report.html", "runs/sweep/compare.html", "runs/advice/advice.html"] {
            let png = "\(dir)/\(page.replacingOccurrences(of: "/", with: "_")).png"
            let r = try bash(
                "'\(chromium)' --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1400 --screenshot='\(png)' 'file://\(dir)/\(page)' 2>&1",
                in: dir)
            XCTAssertEqual(r.status, 0, r.output)
            let image = try PNGImage(path: png)
            XCTAssertEqual(image.width, 1100, page)
            // A blank or failed page is white; a report has text, tables and charts.
            XCTAssertGreaterThan(image.inkFraction(), 0.03, page)
            // Ink in the left and right halves: the page lays out across the window.
            XCTAssertGreaterThan(image.inkFraction(columns: 0..<550), 0.02, page)
            XCTAssertGreaterThan(image.inkFraction(columns: 550..<1100), 0.005, page)
        }
        // The sweep's long run names reach the legend whole (it wraps instead of cutting them).
        let compare = try String(contentsOfFile: "\(dir)/runs/sweep/compare.html", encoding: .utf8)
        XCTAssertTrue(
            compare.contains(
                ">fashion-mlp-kurtosis--shaping.kurtosis.weight=1--shaping.skewness.weight=1</text>"))
    }
}

/// An 8-bit RGB or RGBA PNG, decoded: the chunks, zlib, and the five row filters.
struct PNGImage {
    var width = 0, height = 0, channels = 0
    var pixels: [UInt8] = []

    init(path: String) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count > 33, bytes[1] == 0x50, bytes[2] == 0x4E, bytes[3] == 0x47 else {
            throw PNGError("not a PNG")
        }
        func u32(_ i: Int) -> Int { bytes[i..<i + 4].reduce(0) { $0 << 8 | Int($1) } }
        var i = 8, idat: [UInt8] = []
        while i + 8 <= bytes.count {
            let length = u32(i), type = String(decoding: bytes[i + 4..<i + 8], as: UTF8.self)
            guard i + 12 + length <= bytes.count else { throw PNGError("truncated chunk") }
            let body = Array(bytes[i + 8..<i + 8 + length])
            if type == "IHDR" {
                width = u32(i + 8); height = u32(i + 12)
                guard body[8] == 8, [2, 6].contains(body[9]), body[12] == 0 else {
                    throw PNGError("not 8-bit RGB(A)")
                }
                channels = body[9] == 6 ? 4 : 3
            }
            if type == "IDAT" { idat += body }
            i += 12 + length
        }
        let stride = width * channels
        var raw = [UInt8](repeating: 0, count: height * (stride + 1))
        var size = uLongf(raw.count)
        guard uncompress(&raw, &size, idat, uLong(idat.count)) == Z_OK, Int(size) == raw.count else {
            throw PNGError("bad zlib data")
        }
        pixels = [UInt8](repeating: 0, count: height * stride)
        for y in 0..<height {
            let filter = raw[y * (stride + 1)]
            for x in 0..<stride {
                let v = Int(raw[y * (stride + 1) + 1 + x])
                let a = x >= channels ? Int(pixels[y * stride + x - channels]) : 0
                let b = y > 0 ? Int(pixels[(y - 1) * stride + x]) : 0
                let c = x >= channels && y > 0 ? Int(pixels[(y - 1) * stride + x - channels]) : 0
                let predicted: Int
                switch filter {
                case 1: predicted = a
                case 2: predicted = b
                case 3: predicted = (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    predicted = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                default: predicted = 0
                }
                pixels[y * stride + x] = UInt8((v + predicted) & 0xFF)
            }
        }
    }

    /// The share of pixels (in `columns`) that are not near-white.
    func inkFraction(columns: Range<Int>? = nil) -> Double {
        let cols = columns ?? 0..<width
        var ink = 0
        for y in 0..<height {
            for x in cols {
                let p = (y * width + x) * channels
                if Int(pixels[p]) + Int(pixels[p + 1]) + Int(pixels[p + 2]) < 3 * 235 { ink += 1 }
            }
        }
        return Double(ink) / Double(max(1, height * cols.count))
    }
}

struct PNGError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
