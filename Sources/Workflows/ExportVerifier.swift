// `qshape export --verify N`: builds the exported C (host gcc with -mgeneral-regs-only, or
// arm-none-eabi-gcc for a Cortex-M and QEMU), runs it on the first N test images and compares every
// logit with the Swift integer engine; measures flash, RAM, stack and instructions.
import Config
import Foundation
import DataIO
import IntegerRuntime
import Export

public enum ExportVerifier {
    public struct Report: Codable, Sendable {
        public var target: String
        /// Where it ran: "host", or the QEMU machine.
        public var board: String
        public var images: Int
        public var cAccuracy: Double
        public var swiftAccuracy: Double
        /// Images where any logit or the predicted class differs between C and Swift (must be 0).
        public var mismatchingImages: Int
        /// Host: the model objects' text + rodata + data; Cortex-M: the whole linked program's.
        public var flashBytes: Int
        /// data + bss + stack.
        public var ramBytes: Int
        public var stackBytes: Int
        public var stackMethod: String
        /// .text of model.c and qshape_nn.c alone, and their constant data.
        public var modelCodeBytes: Int
        public var modelDataBytes: Int
        public var macs: Int
        public var instructionsPerInference: Int?
        /// How the absence of floating point was shown.
        public var floatFree: String
        enum CodingKeys: String, CodingKey {
            case target, board, images, macs
            case cAccuracy = "c_accuracy", swiftAccuracy = "swift_integer_accuracy"
            case mismatchingImages = "mismatching_images", flashBytes = "flash_bytes", ramBytes = "ram_bytes"
            case stackBytes = "stack_bytes", stackMethod = "stack_method", modelCodeBytes = "model_code_bytes"
            case modelDataBytes = "model_data_bytes", instructionsPerInference = "instructions_per_inference"
            case floatFree = "float_free"
        }
    }

    /// Soft-float helper routines of the Arm EABI and libgcc; none may be linked.
    static let softFloat = try! NSRegularExpression(pattern: Drivers.softFloatPattern)

    public static let hostFlags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-mgeneral-regs-only"]
    static func armFlags(_ cpu: String) -> [String] {
        [
            "-std=c99", "-Os", "-Wall", "-Wextra", "-Werror", "-mcpu=\(cpu)", "-mthumb", "-mfloat-abi=soft",
            "-ffunction-sections", "-fdata-sections"
        ]
    }

    public static func verify(
        _ c: CModel, engine: IntegerEngine, test: Dataset, images requested: Int,
        target: ExportWorkflow.Target, progress: (String) -> Void
    ) throws -> Report {
        guard requested > 0 else { throw RunError("--verify takes a number of test images, 1 or more") }
        let n = min(requested, test.count)
        let dir = NSTemporaryDirectory() + "qshape-verify-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for f in c.allFiles { try writeAtomically(f.contents, to: "\(dir)/\(f.name)") }
        try writeIDX(test, count: n, to: dir)

        // The Swift engine's logits are computed on a second thread while the C is built and run.
        final class Reference: @unchecked Sendable { var logits: [[Int64]] = [] }
        let reference = Reference(), done = DispatchSemaphore(value: 0)
        Thread {
            reference.logits = referenceLogits(engine, test, count: n); done.signal()
        }.start()
        var joined = false
        defer { if !joined { done.wait() } }
        var report: Report
        let output: String
        switch target {
        case .host:
            (report, output) = try runHost(c, dir: dir, images: n, progress: progress)
        case .cortexM0, .cortexM3:
            (report, output) = try runCortexM(c, dir: dir, images: n, target: target, progress: progress)
        }
        let lines = try parse(output, images: n)
        done.wait()
        joined = true
        let expected = reference.logits
        var mismatches = 0, cCorrect = 0, swiftCorrect = 0
        for i in 0..<n {
            let label = Int(test.labels[i]), e = expected[i]
            var best = 0
            for j in 1..<e.count where e[j] > e[best] { best = j }
            if best == label { swiftCorrect += 1 }
            if lines[i].predicted == label { cCorrect += 1 }
            if lines[i].logits != e || lines[i].predicted != best { mismatches += 1 }
        }
        report.images = n
        report.cAccuracy = 100 * Double(cCorrect) / Double(n)
        report.swiftAccuracy = 100 * Double(swiftCorrect) / Double(n)
        report.mismatchingImages = mismatches
        report.macs = c.summary.macs
        return report
    }

    /// The Swift engine's outputs for the first `count` images.
    static func referenceLogits(_ engine: IntegerEngine, _ test: Dataset, count: Int) -> [[Int64]] {
        QuantizeWorkflow.integerOutputs(engine, test, count: count).map { $0.map(Int64.init) }
    }

    /// The first `count` images and labels as uncompressed IDX files (the drivers' input).
    package static func writeIDX(_ test: Dataset, count: Int, to dir: String) throws {
        func be32(_ v: Int) -> [UInt8] {
            [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)]
        }
        let dims = [count] + test.sampleShape
        var images = [0, 0, 8, UInt8(dims.count)] + dims.flatMap(be32)
        images.reserveCapacity(images.count + count * test.sampleSize)
        for i in 0..<count { images += test.rawBytes(i)! }
        var labels = [0, 0, 8, 1] + be32(count)
        labels += test.labels.prefix(count).map { UInt8(truncatingIfNeeded: $0) }
        try writeAtomically(images, to: "\(dir)/images.idx")
        try writeAtomically(labels, to: "\(dir)/labels.idx")
    }

    struct Line { var predicted: Int; var logits: [Int64] }

    /// The drivers' "image I label L predicted P logits …" lines, in order.
    static func parse(_ output: String, images: Int) throws -> [Line] {
        var lines: [Line] = []
        for raw in output.split(separator: "\n") where raw.hasPrefix("image ") {
            let f = raw.split(separator: " ")
            guard f.count >= 7, f[4] == "predicted", f[6] == "logits", Int(f[1]) == lines.count,
                let p = Int(f[5])
            else { throw RunError("the C driver printed an unreadable line: \(raw.prefix(80))") }
            lines.append(Line(predicted: p, logits: f.dropFirst(7).compactMap { Int64($0) }))
        }
        guard lines.count == images else {
            throw RunError("the C driver classified \(lines.count) of \(images) images")
        }
        return lines
    }

    static func value(_ output: String, _ key: String) -> Int? {
        output.split(separator: "\n").first { $0.hasPrefix(key + " ") }.flatMap {
            Int($0.dropFirst(key.count + 1))
        }
    }

    // MARK: - Host

    static func runHost(
        _ c: CModel, dir: String, images: Int, progress: (String) -> Void
    ) throws -> (Report, String) {
        let cc = try Tool.require("gcc", package: "gcc")
        progress("compiling with gcc \(hostFlags.joined(separator: " "))")
        for file in ["model.c", "qshape_nn.c", "main_host.c"] {
            try Tool.run(cc, hostFlags + ["-fstack-usage", "-c", file], in: dir)
        }
        try Tool.run(cc, ["-o", "main_host", "main_host.o", "model.o", "qshape_nn.o"], in: dir)
        progress("running main_host on \(images) images")
        let out = try Tool.run(
            "\(dir)/main_host", ["images.idx", "labels.idx", "\(images)"], in: dir, timeout: 600)
        let size = try Tool.require("size", package: "binutils")
        let sections = try Sections.read(size, ["model.o", "qshape_nn.o"], in: dir)
        let stack = try stackUsage(dir, prefix: c.prefix)
        let report = Report(
            target: "host", board: "host", images: images, cAccuracy: 0, swiftAccuracy: 0,
            mismatchingImages: 0,
            flashBytes: sections.flash, ramBytes: sections.ram + stack, stackBytes: stack,
            stackMethod: "gcc -fstack-usage: predict plus its deepest kernel",
            modelCodeBytes: sections.code, modelDataBytes: sections.flash - sections.code, macs: 0,
            instructionsPerInference: nil,
            floatFree: "compiled with gcc -mgeneral-regs-only (no floating-point register or instruction)")
        return (report, out)
    }

    /// Stack of one inference from gcc's .su files: the predict function's frame plus the deepest kernel's.
    static func stackUsage(_ dir: String, prefix: String) throws -> Int {
        var predict = 0, kernel = 0
        for file in ["model.su", "qshape_nn.su"] {
            let text = (try? String(contentsOfFile: "\(dir)/\(file)", encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let f = line.split(separator: "\t")
                guard f.count >= 2, let bytes = Int(f[1]) else { continue }
                if f[0].hasSuffix(":\(prefix)_predict") {
                    predict = bytes
                } else {
                    kernel = max(kernel, bytes)
                }
            }
        }
        return predict + kernel
    }

    // MARK: - Cortex-M

    /// arm-none-eabi-gcc (with picolibc), -nm and -size, and qemu-system-arm.
    static func armTools(_ dir: String) throws -> (gcc: String, nm: String, size: String, qemu: String) {
        let gcc = try Tool.require("arm-none-eabi-gcc", package: "gcc-arm-none-eabi")
        let nm = try Tool.require("arm-none-eabi-nm", package: "binutils-arm-none-eabi")
        let size = try Tool.require("arm-none-eabi-size", package: "binutils-arm-none-eabi")
        let qemu = try Tool.require("qemu-system-arm", package: "qemu-system-arm")
        let specs =
            (try? Tool.run(gcc, ["-print-file-name=picolibc.specs"], in: dir))?.trimmingCharacters(
                in: .whitespacesAndNewlines) ?? ""
        guard specs.hasPrefix("/") else {
            throw RunError(
                "picolibc for arm-none-eabi-gcc not found: install the Debian package picolibc-arm-none-eabi")
        }
        return (gcc, nm, size, qemu)
    }

    /// The proof that the Cortex-M build computes without floating point: no soft-float routine
    /// among the linked ELF's symbols.
    static func checkFloatFree(nm: String, dir: String) throws {
        let symbols = try Tool.run(nm, ["model.elf"], in: dir).split(separator: "\n").compactMap {
            $0.split(separator: " ").last.map(String.init)
        }
        let soft = symbols.filter {
            softFloat.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) != nil
        }
        guard soft.isEmpty else {
            throw RunError(
                "the Cortex-M build links soft-float routines: \(soft.prefix(5).joined(separator: ", "))")
        }
    }

    static func runCortexM(
        _ c: CModel, dir: String, images: Int, target: ExportWorkflow.Target,
        progress: (String) -> Void
    ) throws -> (Report, String) {
        let (gcc, nm, size, qemu) = try armTools(dir)
        var board: CortexMTarget = target == .cortexM3 ? .m3 : .m0
        let flags = armFlags(board.cpu)
        progress("compiling for \(board.cpu) with arm-none-eabi-gcc \(flags.joined(separator: " "))")
        try Tool.run(gcc, flags + ["-c", "model.c", "qshape_nn.c"], in: dir)
        let model = try Sections.read(size, ["model.o", "qshape_nn.o"], in: dir)
        func link(_ t: CortexMTarget) throws {
            try writeAtomically(CModel.linkerScript(t), to: "\(dir)/\(t.linkerScript)")
            try Tool.run(
                gcc,
                flags + [
                    "-DQS_CPU_HZ=\(t.cpuHz)", "-specs=picolibc.specs", "--oslib=semihost",
                    "-Wl,--gc-sections", "-T\(t.linkerScript)",
                    "-o", "model.elf", "main_cortexm.c", "model.c", "qshape_nn.c"
                ], in: dir)
        }
        do {
            try link(board)
        } catch let e as RunError
            where board == .m0 && (e.message.contains("overflowed") || e.message.contains("will not fit"))
        {
            progress(
                "the model does not fit the micro:bit (256 KB flash, 16 KB RAM); Cortex-M0 code on the MPS2 AN385 board instead"
            )
            board = .m0Large
            try link(board)
        }
        try checkFloatFree(nm: nm, dir: dir)
        let elf = try Sections.read(size, ["model.elf"], in: dir)
        progress("running on QEMU \(board.machine) (\(board.cpu) code), \(images) images")
        var args = ["-M", board.machine]
        if let cpu = board.qemuCPU { args += ["-cpu", cpu] }
        args += [
            "-nographic", "-monitor", "none", "-serial", "none", "-semihosting-config",
            "enable=on,target=native",
            "-icount", "shift=0", "-kernel", "model.elf"
        ]
        // QS_COUNT is compiled in; the driver reads all of images.idx, which holds exactly `images`.
        let out = try Tool.run(
            qemu, args, in: dir, timeout: 120 + Double(images) * 2,
            mergeErrors: true)
        let stack = value(out, "stack_bytes") ?? 0
        let report = Report(
            target: target.rawValue, board: board.machine, images: images, cAccuracy: 0, swiftAccuracy: 0,
            mismatchingImages: 0, flashBytes: elf.flash, ramBytes: elf.ram + stack, stackBytes: stack,
            stackMethod: "measured: painted stack, the whole program's deepest during one inference",
            modelCodeBytes: model.code, modelDataBytes: model.flash - model.code, macs: 0,
            instructionsPerInference: value(out, "instructions_per_inference"),
            floatFree: "no soft-float symbol in the linked ELF (arm-none-eabi-nm), -mfloat-abi=soft")
        return (report, out)
    }
}

/// Section sizes from `size -A`: flash (code, constants, initialised data), RAM (data, bss), code.
struct Sections {
    var flash = 0, ram = 0, code = 0

    static func read(_ size: String, _ files: [String], in dir: String) throws -> Sections {
        var s = Sections()
        for line in try Tool.run(size, ["-A", "-d"] + files, in: dir).split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 3, f[0].hasPrefix("."), let bytes = Int(f[1]) else { continue }
            let name = String(f[0])
            if [
                ".debug", ".comment", ".ARM.attributes", ".stack", ".heap", ".note", ".eh_frame", ".group",
                ".tbss_space"
            ]
            .contains(where: { name.hasPrefix($0) }) {
                continue
            }
            if name.hasPrefix(".bss") || name.hasPrefix(".tbss") || name.hasPrefix(".noinit") {
                s.ram += bytes; continue
            }
            if name.hasPrefix(".data") && !name.hasPrefix(".data.rel.ro") || name.hasPrefix(".tdata") {
                s.ram += bytes
            }
            s.flash += bytes
            if name.hasPrefix(".text") || name.hasPrefix(".init") { s.code += bytes }
        }
        return s
    }
}

/// External programs: found on PATH or named with the package that installs them; run with a time limit.
package enum Tool {
    package static func require(_ name: String, package: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":")
        where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        throw RunError("\(name) not found: install the Debian package \(package)")
    }

    /// Runs a program; its standard output, or a RunError with the first lines of its errors.
    @discardableResult
    /// `mergeErrors` returns standard error after standard output (QEMU writes semihosting output there).
    package static func run(
        _ program: String, _ arguments: [String], in dir: String, timeout: Double = 300,
        mergeErrors: Bool = false
    ) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch {
            throw RunError("\(program) could not be started (\(error.localizedDescription))")
        }
        let timer = DispatchWorkItem { if p.isRunning { p.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: timer)
        // Standard error is read on a second thread, so that neither pipe can fill and block the program.
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let errReader = Thread { errBox.data = err.fileHandleForReading.readDataToEndOfFile() }
        errReader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        timer.cancel()
        while !errReader.isFinished { usleep(1000) }
        let errData = errBox.data
        let name = URL(fileURLWithPath: program).lastPathComponent
        if p.terminationReason == .uncaughtSignal {
            throw RunError(
                "\(name) was stopped after \(Int(timeout)) s or by a signal (\(p.terminationStatus))")
        }
        guard p.terminationStatus == 0 else {
            let text = String(decoding: errData, as: UTF8.self) + String(decoding: outData, as: UTF8.self)
            let first = text.split(separator: "\n").filter { !$0.isEmpty }.prefix(3).joined(separator: " | ")
            throw RunError(
                "\(name) \(arguments.prefix(6).joined(separator: " ")) failed (status \(p.terminationStatus)): \(first)"
            )
        }
        return String(decoding: outData, as: UTF8.self)
            + (mergeErrors ? String(decoding: errData, as: UTF8.self) : "")
    }
}
