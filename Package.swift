// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "QShape",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "qshape", targets: ["qshape"]),
        .library(name: "QShapeKit", targets: ["Config", "Workflows"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2")
    ],
    targets: [
        // System libraries: OpenBLAS (libopenblas-dev) and zlib (zlib1g-dev).
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        .systemLibrary(name: "CMalloc"),
        // The processor a thread is on, and thread affinity (glibc GNU extensions).
        .systemLibrary(name: "CThreads"),
        // CPUID and XGETBV: what the processor and the OS support (choosing OpenBLAS's kernels).
        .systemLibrary(name: "CProcessor"),
        // Header-only vector builtins (a square root Swift's SIMD types would do lane by lane).
        .systemLibrary(name: "CVectorMath"),

        // The float engine: tensors and BLAS, layers with their forward and backward passes, training.
        .target(name: "Tensors", dependencies: ["CBLAS", "CMalloc", "CProcessor"]),
        .target(name: "NeuralNet", dependencies: ["Tensors", "CVectorMath"]),
        .target(
            name: "Training", dependencies: ["Tensors", "NeuralNet", "DataIO", "CVectorMath", "CThreads"]),
        .target(name: "DataIO", dependencies: ["Tensors", "CZlib", "CVectorMath"]),
        // The integer engine: Swift standard library only (no Foundation, no Float or Double).
        .systemLibrary(name: "CIntegerKernels"),
        .target(name: "IntegerRuntime", dependencies: ["CIntegerKernels", "CProcessor"]),
        // Float model → integer model: ranges, weight quantisers, requantisation, conversion.
        .target(name: "Quantization", dependencies: ["Tensors", "NeuralNet", "IntegerRuntime"]),
        // The shaping penalties (their maths, vector passes and Double reference) and their loss term.
        .target(
            name: "Shaping",
            dependencies: [
                "Tensors", "NeuralNet", "Training", "Quantization", "IntegerRuntime", "CVectorMath"
            ]),
        .target(name: "Reports"),
        // C export: the integer model as float-free C99 (text only; it imports the integer engine).
        .target(name: "Export", dependencies: ["IntegerRuntime"]),
        // The config file: schema, YAML reading with validation, and the resolved YAML written back.
        .target(
            name: "Config",
            dependencies: [
                "Tensors", "NeuralNet", "Training", "DataIO", "Quantization", "Shaping", "IntegerRuntime",
                .product(name: "Yams", package: "Yams")
            ]),
        // What each command does: train, eval, quantize, stats, report, compare, sweep, export.
        .target(
            name: "Workflows",
            dependencies: [
                "Tensors", "NeuralNet", "Training", "DataIO", "Quantization", "Shaping", "IntegerRuntime",
                "Reports", "Export",
                "Config"
            ]),
        // `qshape bench`: throughput and memory of the example configs (Examples/*.yaml).
        .target(
            name: "Benchmarks",
            dependencies: [
                "Tensors", "NeuralNet", "Training", "DataIO", "Quantization", "Shaping", "IntegerRuntime",
                "Config", "Workflows"
            ]),
        .executableTarget(
            name: "qshape",
            dependencies: [
                "Config", "Workflows", "Benchmarks", "Tensors", "NeuralNet", "Training", "DataIO", "Reports",
                "Export", "IntegerRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ]),

        // Fuzz targets over the file parsers: libFuzzer under `make fuzz`, corpus replay otherwise.
        .executableTarget(name: "qshape-fuzz", dependencies: ["Workflows"]),

        // The fixtures are read by path (#filePath), not as bundle resources.
        .testTarget(
            name: "QShapeTests",
            dependencies: [
                "Tensors", "NeuralNet", "Training", "DataIO", "Quantization", "Shaping", "IntegerRuntime",
                "Reports",
                "Export", "Config", "Workflows", "Benchmarks", "qshape", "CZlib"
            ],
            exclude: ["Fixtures"])
    ]
)
