// Where a result comes from: QShape's version and checkout, the processor and its instruction
// sets, and the BLAS with its kernels and threads. Trained weights and speeds depend on all of
// them (OpenBLAS picks kernels per processor), so every run folder and every bench records them.
import Config
import Foundation
import Tensors
import DataIO

public struct Provenance: Codable, Sendable, Equatable {
    public static let version = "1.1.0"

    public var qshape: String
    /// The git checkout the executable's sources are in, as it is when the record is made.
    public var checkout: String
    /// "release, -target-cpu native (make)": the build mode and whether make built it for this processor.
    public var build: String
    public var processor: String
    public var instructionSets: [String]
    public var cores: Int
    public var blas: BLASSetup.Summary
    /// The data files a run read: name → "crc32 1a2b3c4d, N bytes" (nil outside runs).
    public var data: [String: String]?

    enum CodingKeys: String, CodingKey {
        case qshape, checkout, build, processor, cores, blas, data
        case instructionSets = "instruction_sets"
    }

    /// The record of a training run: the machine, and checksums of the data files it read.
    public static func run(_ config: Config) -> Provenance {
        var p = current
        let d = config.data
        var files: [String: String] = [:]
        let names =
            d.format == .csv
            ? [d.trainImages, d.testImages] : [d.trainImages, d.trainLabels, d.testImages, d.testLabels]
        for name in names {
            if let c = fileChecksum(d.resolve(name)) {
                files[name] = String(format: "crc32 %08x, %d bytes", c.crc32, c.bytes)
            }
        }
        p.data = files
        return p
    }

    public static var current: Provenance {
        let p = Processor.current
        #if DEBUG
            var build = "debug"
        #else
            var build = "release"
        #endif
        #if QSHAPE_NATIVE_CPU
            build += ", -target-cpu native (make)"
        #else
            build += ", without make's -target-cpu native"
        #endif
        let name = p.brand.isEmpty ? "unknown" : p.brand
        return Provenance(
            qshape: version, checkout: checkoutDescription, build: build,
            processor: "\(name) (\(p.vendor) family \(p.family) model \(p.model))",
            instructionSets: p.features.names, cores: ProcessInfo.processInfo.activeProcessorCount,
            blas: BLASSetup.summary)
    }

    /// `qshape --version`: the version and the checkout.
    public static var versionLine: String { "\(version) (\(checkoutDescription))" }

    /// "commit 1a2b3c4" (", with local changes" when the tree differs), or "no git checkout".
    static let checkoutDescription: String = {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path
        guard let commit = git(["-C", sources, "rev-parse", "--short=12", "HEAD"]), !commit.isEmpty else {
            return "no git checkout"
        }
        let changes = git(["-C", sources, "status", "--porcelain", "--untracked-files=no"]) ?? ""
        return "commit \(commit)\(changes.isEmpty ? "" : ", with local changes")"
    }()

    private static func git(_ arguments: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Writes the record as `provenance.json` into a run folder (atomically).
    func write(to dir: String) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        try writeAtomically(
            String(decoding: try e.encode(self), as: UTF8.self) + "\n", to: "\(dir)/provenance.json")
    }

    /// The record as labelled lines, for reports.
    public var lines: [(String, String)] {
        [
            ("QShape", "\(qshape) (\(checkout); \(build))"), ("processor", "\(processor), \(cores) cores"),
            (
                "instruction sets",
                instructionSets.isEmpty ? "SSE only" : instructionSets.joined(separator: " ")
            ),
            (
                "BLAS",
                "\(blas.library) \(blas.version), \(blas.core) kernels (chosen by \(blas.chosenBy)), \(blas.threads) threads"
            )
        ]
            + (data ?? [:]).sorted { $0.key < $1.key }.map { ("data \($0.key)", $0.value) }
    }
}
