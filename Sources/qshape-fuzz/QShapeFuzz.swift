// qshape-fuzz: the fuzz targets of Workflows.FuzzTarget.
//   Built with -sanitize=fuzzer -DFUZZING (make fuzz): libFuzzer drives the target named by the
//   environment variable QSHAPE_FUZZ, e.g. QSHAPE_FUZZ=idx qshape-fuzz CORPUS -max_total_time=600.
//   Built plainly: `qshape-fuzz TARGET FILE_OR_FOLDER…` replays inputs, one line per target.
import Foundation
import Workflows
import Config

#if FUZZING
    @_silgen_name("LLVMFuzzerRunDriver")
    func runDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    nonisolated(unsafe) var selected = FuzzTarget.safetensors

    @main
    struct Fuzz {
        static func main() {
            guard let name = ProcessInfo.processInfo.environment["QSHAPE_FUZZ"],
                let target = FuzzTarget(rawValue: name)
            else {
                FileHandle.standardError.write(
                    Data(
                        "error: set QSHAPE_FUZZ to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n"
                            .utf8))
                exit(2)
            }
            selected = target
            var argc = CommandLine.argc
            var argv = CommandLine.unsafeArgv
            exit(
                runDriver(&argc, &argv) { data, size in
                    selected.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
                    return 0
                })
        }
    }
#else
    @main
    struct Replay {
        static func main() {
            let args = CommandLine.arguments.dropFirst()
            guard let name = args.first, let target = FuzzTarget(rawValue: name), args.count >= 2 else {
                FileHandle.standardError.write(
                    Data(
                        "error: usage: qshape-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE_OR_FOLDER…\n"
                            .utf8))
                exit(2)
            }
            var count = 0
            for path in args.dropFirst() {
                for file in FuzzTarget.files(under: path) {
                    target.run(FileManager.default.contents(atPath: file).map { [UInt8]($0) } ?? [])
                    count += 1
                }
            }
            print("\(target.rawValue): \(count) inputs replayed")
        }
    }
#endif
