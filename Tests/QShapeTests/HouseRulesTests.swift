// Tests: the house rules of Docs/Architecture.md hold for every source file: at most 400 lines,
// functions of at most 60 lines (measured by the compiler's parser), a first comment that says
// what the file is for.
import Foundation
import XCTest
@testable import Workflows

final class HouseRulesTests: XCTestCase {
    static let maxFileLines = 400, maxFunctionLines = 60

    /// Every .swift file under `folder` of the repository, as a repository-relative path.
    func swiftFiles(_ folder: String) throws -> [String] {
        let root = URL(fileURLWithPath: Fixtures.repository)
        let enumerator = FileManager.default.enumerator(atPath: root.appendingPathComponent(folder).path)!
        return enumerator.compactMap { $0 as? String }.filter {
            $0.hasSuffix(".swift") && !$0.contains("Fixtures/")
        }
        .map { "\(folder)/\($0)" }.sorted()
    }

    func testSourceFilesAreShortAndSayWhatTheyAreFor() throws {
        let files = try swiftFiles("Sources") + swiftFiles("Tests")
        XCTAssertGreaterThan(files.count, 100)
        for f in files {
            let text = try String(contentsOfFile: "\(Fixtures.repository)/\(f)", encoding: .utf8)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            XCTAssertTrue(
                lines.first?.hasPrefix("// ") == true,
                "\(f): the first line is not a comment saying what the file is for")
            if f.hasPrefix("Sources/") {
                XCTAssertLessThanOrEqual(lines.count, Self.maxFileLines + 1, "\(f) has \(lines.count) lines")
            }
        }
    }

    /// Function, initialiser and accessor bodies, from the ranges `swiftc -dump-parse` gives.
    func testNoFunctionIsLongerThanSixtyLines() throws {
        let swiftc = try Tool.require("swiftc", package: "the Swift toolchain")
        let declaration = try NSRegularExpression(
            pattern:
                #"^\s*\((func_decl|constructor_decl|accessor_decl|destructor_decl) .*range=\[[^:]+:(\d+):\d+ - line:(\d+):\d+\]( "[^"]*")?"#,
            options: [.anchorsMatchLines])
        var measured = 0
        for f in try swiftFiles("Sources") {
            let tree = try Tool.run(swiftc, ["-dump-parse", f], in: Fixtures.repository, mergeErrors: false)
            for m in declaration.matches(in: tree, range: NSRange(tree.startIndex..., in: tree)) {
                let text = { (i: Int) in
                    m.range(at: i).location == NSNotFound
                        ? "" : (tree as NSString).substring(with: m.range(at: i))
                }
                let first = Int(text(2))!, last = Int(text(3))!
                measured += 1
                XCTAssertLessThanOrEqual(
                    last - first + 1, Self.maxFunctionLines,
                    "\(f):\(first) \(text(4)) has \(last - first + 1) lines")
            }
        }
        XCTAssertGreaterThan(measured, 500, "the parser's dump was read")
    }
}
