// Loading the data sets a config names (IDX, NPY or CSV) with the checks a user can act on.
import Config
import Foundation
import DataIO

/// The training and test sets a config names.
public struct DataSplit: Sendable {
    public var train: Dataset
    public var test: Dataset
}

extension DataConfig {
    package func resolve(_ name: String) -> String {
        name.hasPrefix("/") ? name : URL(fileURLWithPath: dir).appendingPathComponent(name).path
    }

    /// Loads both sets, applying `input_shape` and the limits. A missing Fashion-MNIST says how to get it.
    public func load() throws -> DataSplit {
        let files =
            format == .csv ? [trainImages, testImages] : [trainImages, trainLabels, testImages, testLabels]
        for f in files.map(resolve) where !FileManager.default.fileExists(atPath: f) {
            if dir == DataConfig.fashionMNISTDirectory {
                throw DataError(
                    "\(f) not found: Fashion-MNIST is not installed. Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; `make demo` does this), or put the four IDX files from Zalando Research's fashion-mnist repository in a folder and set data.dir"
                )
            }
            throw DataError("\(f) not found (data.dir is \(dir))")
        }
        var train = try loadSet(images: resolve(trainImages), labels: resolve(trainLabels))
        var test = try loadSet(images: resolve(testImages), labels: resolve(testLabels))
        if let shape = inputShape {
            for (set, path) in [(train, trainImages), (test, testImages)]
            where set.sampleSize != shape.reduce(1, *) {
                throw DataError(
                    "\(resolve(path)): samples have \(set.sampleSize) values, data.input_shape \(shape) needs \(shape.reduce(1, *))"
                )
            }
            train = train.reshaped(shape)
            test = test.reshaped(shape)
        }
        if trainLimit > 0 && trainLimit < train.count { train = train.subset(0..<trainLimit) }
        if testLimit > 0 && testLimit < test.count { test = test.subset(0..<testLimit) }
        guard train.sampleShape == test.sampleShape else {
            throw DataError(
                "training samples have shape \(train.sampleShape) but test samples \(test.sampleShape)")
        }
        return DataSplit(train: train, test: test)
    }

    private func loadSet(images: String, labels: String) throws -> Dataset {
        switch format {
        case .idx: return try IDX.dataset(images: images, labels: labels)
        case .npy: return try NPY.dataset(images: images, labels: labels)
        case .csv: return try CSV.dataset(path: images, labelColumn: labelColumn)
        }
    }
}
