// Tests: the README's Use section runs as written.
import XCTest
import Foundation

/// Issue 17: the README's "Use" section runs top to bottom as written, after `make demo`. Each
/// command is run as the README has it, with `--set` overrides appended that point it at the
/// small Fashion-MNIST subset and shorten the training.
final class ReadmeTests: XCTestCase {
    /// The commands of the first `sh` block after "## Use", continuation lines joined, comments cut.
    static func useCommands() throws -> [[String]] {
        let readme = try String(contentsOfFile: "\(Fixtures.repository)/README.md", encoding: .utf8)
        let use = try XCTUnwrap(readme.components(separatedBy: "\n## Use\n").dropFirst().first)
        let block = try XCTUnwrap(
            use.components(separatedBy: "```sh\n").dropFirst().first?.components(separatedBy: "\n```").first)
        return block.replacingOccurrences(of: "\\\n", with: " ").split(separator: "\n").map { line in
            let code = line.components(separatedBy: " #").first ?? String(line)
            return code.split(separator: " ").map(String.init)
        }.filter { !$0.isEmpty }
    }

    func testUseSectionRunsAsWritten() throws {
        let dir = temporaryDirectory(self)
        try FileManager.default.createSymbolicLink(
            atPath: "\(dir)/Examples", withDestinationPath: "\(Fixtures.repository)/Examples")
        let data = ["--set", "data.dir=\(Fixtures.fashion)"]
        let short = data + ["--set", "training.epochs=1", "--set", "training.max_steps_per_epoch=3"]
        // What `make demo` leaves: the two example MLPs' run folders.
        for example in ["fashion-mlp", "fashion-mlp-kurtosis"] {
            let r = try qshape(["train", "Examples/\(example).yaml"] + short, in: dir)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let commands = try Self.useCommands()
        XCTAssertGreaterThanOrEqual(commands.count, 10)
        for command in commands {
            XCTAssertEqual(command.first, "qshape", "\(command)")
            var arguments = Array(command.dropFirst())
            switch arguments.first {
            case "train", "sweep": arguments += short
            case "eval", "quantize", "export", "advise": arguments += data
            default: break
            }
            let r = try qshape(arguments, in: dir)
            XCTAssertEqual(r.status, 0, "\(command.joined(separator: " ")): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("error"), "\(command.joined(separator: " ")): \(r.stderr)")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/deploy/mlp4/model.c"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/runs/compare.html"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/runs/advice/advice.html"))
    }

    /// `make install` puts the executable under PREFIX/bin.
    func testMakeInstallCopiesTheExecutable() throws {
        let dir = temporaryDirectory(self)
        let exe = try qshapeExecutable()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        p.arguments = [
            "-s", "-C", Fixtures.repository, "-o", "build", "install", "PREFIX=\(dir)", "QSHAPE=\(exe.path)"
        ]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let r = try qshapeAt("\(dir)/bin/qshape", ["--version"])
        XCTAssertTrue(r.hasPrefix("1."), r)
    }

    func qshapeAt(_ path: String, _ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
