// Test helpers: temporary folders, the fixtures' paths, running the executable.
import Foundation
import XCTest

enum Fixtures {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures"
    ).path
    static let fashion = "\(dir)/fashion-mnist-mini"
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static func example(_ name: String) -> String { "\(repository)/Examples/\(name)" }
}

/// A fresh temporary folder, removed when the test ends.
func temporaryDirectory(_ test: XCTestCase) -> String {
    let path = NSTemporaryDirectory() + "qshape-test-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

func write(_ text: String, to path: String) {
    let written = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    precondition(written, "the test could not write \(path)")
}

/// Runs the built `qshape` executable (it sits beside the test bundle).
struct CommandResult { var status: Int32; var stdout: String; var stderr: String }

func qshapeExecutable() throws -> URL {
    let candidates = [
        Bundle.main.bundleURL, URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    ]
    .flatMap {
        [$0.appendingPathComponent("qshape"), $0.deletingLastPathComponent().appendingPathComponent("qshape")]
    }
    guard let exe = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        throw XCTSkip("qshape executable not found beside the tests")
    }
    return exe
}

func qshape(_ arguments: [String], in directory: String? = nil) throws -> CommandResult {
    let p = Process()
    p.executableURL = try qshapeExecutable()
    p.arguments = arguments
    if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CommandResult(
        status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
        stderr: String(decoding: e, as: UTF8.self))
}
