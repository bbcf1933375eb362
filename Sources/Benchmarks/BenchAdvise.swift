// `qshape bench --only advise`: how long `qshape advise` takes on each example network (every
// layer × widths 8…2 in both directions on 2,000 images, the search, the integer verification).
import Config
import Workflows
import Foundation
import NeuralNet
import DataIO

extension BenchWorkflow {
    public struct AdviseSpeed: Codable, Sendable {
        public var network: String
        public var layers: Int
        public var widths: Int
        public var images: Int
        public var seconds: Double
    }

    /// `qshape advise` with its defaults on each example network's initial weights (the time does
    /// not depend on the weights' values); skipped without Fashion-MNIST.
    static func runAdvise(_ r: inout Result, log: (String) -> Void) throws {
        let fashion = DataConfig()
        guard FileManager.default.fileExists(atPath: fashion.resolve(fashion.testImages)) else {
            return log("advise: skipped (Fashion-MNIST is not installed)")
        }
        let dir = NSTemporaryDirectory() + "qshape-bench-advise-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in exampleConfigs {
            let config = try Config.load(path: "\(examplesDirectory)/\(name).yaml")
            let model = try Sequential(
                specs: config.layers, inputShape: [1, 28, 28], seed: config.training.seed)
            try Weights.save(model, to: "\(dir)/\(name).safetensors")
            let o = AdviseWorkflow.Options(weights: "\(dir)/\(name).safetensors")
            var advice: AdviseWorkflow.Result?
            let t = time { advice = try? AdviseWorkflow.run(config, o) }
            guard let a = advice else { throw RunError("bench advise: qshape advise on \(name) failed") }
            r.advise.append(
                AdviseSpeed(
                    network: name, layers: a.layers.count, widths: o.widths.count, images: a.images,
                    seconds: t))
            log(
                String(
                    format:
                        "advise %@: %d layers × %d widths both ways on %d images, search and verification: %.1f s",
                    name, a.layers.count, o.widths.count, a.images, t))
        }
    }
}
