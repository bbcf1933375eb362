// `qshape bench --only export`: the exported C against the Swift integer engine, classifying the
// same 10,000 images in the same run.
import Config
import Workflows
import Foundation
import Tensors
import NeuralNet
import DataIO
import Quantization
import IntegerRuntime
import Export

extension BenchWorkflow {
    public struct ExportSpeed: Codable, Sendable {
        public var network: String
        public var images: Int
        /// The Swift engine, one thread (as the C runs) and two (as `qshape quantize` runs it).
        public var swiftImagesPerSecond: Double
        public var swiftTwoThreadsImagesPerSecond: Double
        /// The C's predict over the images in memory (the bench's own driver, timed inside the
        /// process), built `gcc -std=c99 -O3 -march=native`, and as the float-free proof builds it
        /// (`-O2 -mgeneral-regs-only`: no vector registers either).
        public var cImagesPerSecond: Double
        public var cFloatFreeBuildImagesPerSecond: Double
        enum CodingKeys: String, CodingKey {
            case network, images
            case swiftImagesPerSecond = "swift_images_per_second"
            case swiftTwoThreadsImagesPerSecond = "swift_two_threads_images_per_second"
            case cImagesPerSecond = "c_images_per_second"
            case cFloatFreeBuildImagesPerSecond = "c_float_free_build_images_per_second"
        }
    }

    /// One network's 8-bit integer model (random weights, calibrated on random images) in Swift and in C.
    static func exportSpeed(name: String, layers: [LayerSpec], count: Int) throws -> ExportSpeed {
        let cc = try Tool.require("gcc", package: "gcc")
        let (data, _, conversion) = try randomIntegerModel(layers: layers, count: count)
        let engine = IntegerEngine(conversion.integerModel)
        let c = try CGenerator.generate(conversion.integerModel)
        let dir = NSTemporaryDirectory() + "qshape-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for f in c.allFiles { try writeAtomically(f.contents, to: "\(dir)/\(f.name)") }
        try ExportVerifier.writeIDX(data, count: count, to: dir)
        try writeAtomically(benchDriver(c.prefix), to: "\(dir)/bench.c")
        let sources = ["bench.c", "model.c", "qshape_nn.c"]
        try Tool.run(cc, ["-std=c99", "-O3", "-march=native", "-o", "fast"] + sources, in: dir)
        try Tool.run(cc, ExportVerifier.hostFlags + ["-o", "floatfree"] + sources, in: dir)
        let inputs = (0..<count).map { data.rawBytes($0)!.map { Int16($0) } }
        var swift = Double.infinity, swift2 = Double.infinity, fast = Double.infinity,
            floatFree = Double.infinity
        for _ in 0..<2 {
            swift = min(swift, time { for x in inputs { _ = engine.classify(x) } })
            swift2 = min(swift2, time { _ = QuantizeWorkflow.integerPredictions(engine, data) })
            fast = min(fast, try timedRun("\(dir)/fast", count: count, in: dir))
            floatFree = min(floatFree, try timedRun("\(dir)/floatfree", count: count, in: dir))
        }
        let n = Double(count)
        return ExportSpeed(
            network: name, images: count, swiftImagesPerSecond: n / swift,
            swiftTwoThreadsImagesPerSecond: n / swift2,
            cImagesPerSecond: n / fast, cFloatFreeBuildImagesPerSecond: n / floatFree)
    }

    /// Seconds the driver reports for classifying `count` images.
    static func timedRun(_ program: String, count: Int, in dir: String) throws -> Double {
        let out = try Tool.run(program, ["images.idx", "\(count)"], in: dir)
        guard let ns = out.split(separator: " ").first.flatMap({ Int($0) }) else {
            throw RunError("\(program): no timing in its output")
        }
        return Double(ns) / 1e9
    }

    /// Reads an IDX image file into memory, then times the model's predict over every image
    /// (CLOCK_MONOTONIC, printed in nanoseconds with the sum of the classes).
    static func benchDriver(_ prefix: String) -> String {
        let g = prefix.uppercased()
        return """
            #define _POSIX_C_SOURCE 199309L
            #include <stdio.h>
            #include <stdint.h>
            #include <stdlib.h>
            #include <time.h>
            #include "model.h"

            int main(int argc, char **argv)
            {
                const long n = argc > 2 ? atol(argv[2]) : 0;
                uint8_t *x = malloc((size_t)n * \(g)_INPUT_SIZE + 1);
                int32_t logits[\(g)_NUM_CLASSES];
                struct timespec a, b;
                long i, classes = 0;
                FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
                if (!f || !x || fseek(f, 16, SEEK_SET) != 0 || fread(x, \(g)_INPUT_SIZE, (size_t)n, f) != (size_t)n) return 2;
                clock_gettime(CLOCK_MONOTONIC, &a);
                for (i = 0; i < n; i++) classes += \(prefix)_predict(x + i * \(g)_INPUT_SIZE, logits);
                clock_gettime(CLOCK_MONOTONIC, &b);
                printf("%ld %ld\\n", (long)(b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec), classes);
                return 0;
            }

            """
    }

    static func runExport(_ r: inout Result, log: (String) -> Void) throws {
        for (name, layers) in try networks() {
            let s = try exportSpeed(name: name, layers: layers, count: 10_000)
            log(
                String(
                    format:
                        "export %@ 10000 images, 8-bit: C %8.0f images/s (gcc -O3 -march=native; %8.0f float-free build), Swift engine %8.0f (1 thread), %8.0f (2 threads)  →  C/Swift %.2fx",
                    name as NSString, s.cImagesPerSecond, s.cFloatFreeBuildImagesPerSecond,
                    s.swiftImagesPerSecond,
                    s.swiftTwoThreadsImagesPerSecond, s.cImagesPerSecond / s.swiftImagesPerSecond))
            r.export.append(s)
        }
    }
}
