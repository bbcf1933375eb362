// Tests: the IDX, NPY, CSV and safetensors readers and writers.
import XCTest
import Foundation
import Tensors
import DataIO

final class DataIOTests: XCTestCase {
    func testFashionFixtureReadsAsIDXGzip() throws {
        let d = try IDX.dataset(
            images: "\(Fixtures.fashion)/train-images-idx3-ubyte.gz",
            labels: "\(Fixtures.fashion)/train-labels-idx1-ubyte.gz")
        XCTAssertEqual(d.count, 3000)
        XCTAssertEqual(d.sampleShape, [1, 28, 28])
        XCTAssertEqual(d.classCount, 10)
        XCTAssertEqual(d.labels.prefix(5), [9, 0, 0, 3, 0])  // the first Fashion-MNIST labels
        let (x, y) = d.batch([0, 2], normalization: Normalization())
        XCTAssertEqual(x.shape, [2, 1, 28, 28])
        XCTAssertEqual(y, [9, 0])
        XCTAssertTrue(x.data.allSatisfy { $0 >= 0 && $0 <= 1 })
        let z = d.batch([0], normalization: Normalization(mean: 0.5, std: 0.25)).0
        XCTAssertEqual(z.data[300], (x.data[300] - 0.5) / 0.25, accuracy: 1e-5)
    }

    /// A batch is its rows in the order asked (repeats included), each value raw·a + b, from
    /// bytes or floats alike.
    func testBatchGathersRowsInOrderWithTheNormalisation() {
        let rows = 7, size = 5
        let raw = (0..<rows * size).map { UInt8(($0 * 37) % 256) }
        let norm = Normalization(scale: 1 / 255, mean: 0.3, std: 0.7)
        let a = norm.scale / norm.std, b = -norm.mean / norm.std
        let labels = (0..<rows).map { Int32($0 % 3) }
        let indices = [6, 0, 3, 3, 5, 1]
        for storage in [Dataset.Storage.bytes(raw), .floats(raw.map(Float.init))] {
            let d = Dataset(sampleShape: [size], storage: storage, labels: labels)
            let (x, y) = d.batch(indices, normalization: norm)
            XCTAssertEqual(x.shape, [indices.count, size])
            XCTAssertEqual(y, indices.map { labels[$0] })
            let expected = indices.flatMap { i in (0..<size).map { Float(raw[i * size + $0]) * a + b } }
            XCTAssertEqual(x.data, expected)
            XCTAssertEqual(d.batch([Int](), normalization: norm).0.data, [])
        }
    }

    func testPlainIDXRoundTripAndTruncationIsAClearError() throws {
        let dir = temporaryDirectory(self)
        let bytes = IDX.encode(dimensions: [2, 2, 3], bytes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255])
        try writeAtomically(bytes, to: "\(dir)/x.idx")
        let a = try IDX.read("\(dir)/x.idx")
        XCTAssertEqual(a.dimensions, [2, 2, 3])
        XCTAssertEqual(a.bytes.last, 255)
        try writeAtomically(Array(bytes.dropLast(3)), to: "\(dir)/cut.idx")
        XCTAssertThrowsError(try IDX.read("\(dir)/cut.idx")) { e in
            XCTAssertTrue("\(e)".contains("cut.idx") && "\(e)".contains("truncated"), "\(e)")
        }
        try writeAtomically([1, 2, 3, 4, 5], to: "\(dir)/junk.idx")
        XCTAssertThrowsError(try IDX.read("\(dir)/junk.idx")) { e in
            XCTAssertTrue("\(e)".contains("not an IDX file"))
        }
    }

    func testNPYReadsUInt8Float32AndInt64() throws {
        let dir = temporaryDirectory(self)
        try writeAtomically(NPY.encode(shape: [3, 2, 2], values: .uint8(Array(0..<12))), to: "\(dir)/x.npy")
        try writeAtomically(NPY.encode(shape: [3], values: .int64([2, 0, 1])), to: "\(dir)/y.npy")
        let d = try NPY.dataset(images: "\(dir)/x.npy", labels: "\(dir)/y.npy")
        XCTAssertEqual(d.sampleShape, [2, 2])
        XCTAssertEqual(d.labels, [2, 0, 1])
        try writeAtomically(
            NPY.encode(shape: [2, 3], values: .float32([0.5, -1, 2, 3, 4, 5])), to: "\(dir)/f.npy")
        let f = try NPY.read("\(dir)/f.npy")
        guard case .float32(let v) = f.values else { return XCTFail() }
        XCTAssertEqual(v, [0.5, -1, 2, 3, 4, 5])
        XCTAssertEqual(f.shape, [2, 3])
        // NumPy's own file, written by the fixture script.
        let logits = try NPY.read("\(Fixtures.dir)/pytorch-mlp-logits.npy")
        XCTAssertEqual(logits.shape, [16, 10])
    }

    func testCSVWithHeaderAndBadCellsNamed() throws {
        let dir = temporaryDirectory(self)
        write("label,a,b,c\n1,0,255,3\n0,4,5,6\n", to: "\(dir)/ok.csv")
        let d = try CSV.dataset(path: "\(dir)/ok.csv")
        XCTAssertEqual(d.labels, [1, 0])
        XCTAssertEqual(d.sampleShape, [3])
        XCTAssertEqual(d.batch([0], normalization: Normalization(scale: 1)).0.data, [0, 255, 3])
        write("1,2,3\n0,x,4\n", to: "\(dir)/bad.csv")
        XCTAssertThrowsError(try CSV.dataset(path: "\(dir)/bad.csv")) { e in
            XCTAssertEqual("\(e)", "\(dir)/bad.csv:2: column 2 is not a finite number: 'x'")
        }
        write("1,2,3\n0,4\n", to: "\(dir)/ragged.csv")
        XCTAssertThrowsError(try CSV.dataset(path: "\(dir)/ragged.csv"))
    }

    func testSafetensorsRoundTripAndDamagedFiles() throws {
        let dir = temporaryDirectory(self)
        let file = SafeTensors.File(
            entries: [
                .init(name: "0.weight", floats: [1, -2, 3.5, 4, 5, 6], shape: [2, 3]),
                .init(name: "1.num_batches_tracked", int64: [7], shape: [])
            ], metadata: ["format": "pt"])
        try SafeTensors.write(file, to: "\(dir)/m.safetensors")
        let back = try SafeTensors.read("\(dir)/m.safetensors")
        XCTAssertEqual(back["0.weight"]?.floats, [1, -2, 3.5, 4, 5, 6])
        XCTAssertEqual(back["0.weight"]?.shape, [2, 3])
        XCTAssertEqual(back["1.num_batches_tracked"]?.integers, [7])
        XCTAssertEqual(back.metadata["format"], "pt")
        let raw = [UInt8](FileManager.default.contents(atPath: "\(dir)/m.safetensors")!)
        XCTAssertEqual(Int(raw[0]) % 8, 0, "header padded to 8 bytes")
        for (name, bytes) in [
            ("cut", Array(raw.dropLast(5))), ("tiny", [1, 2, 3]),
            ("text", Array("hello world, not tensors".utf8))
        ] {
            try writeAtomically(bytes, to: "\(dir)/\(name).safetensors")
            XCTAssertThrowsError(try SafeTensors.read("\(dir)/\(name).safetensors")) { e in
                XCTAssertTrue("\(e)".hasPrefix("\(dir)/\(name).safetensors: "), "\(e)")
            }
        }
    }

    func testHalfAndBFloat16Conversions() {
        let half = SafeTensors.Entry(
            name: "h", dtype: .F16, shape: [3], bytes: [0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00])
        XCTAssertEqual(half.floats[0], 1)
        XCTAssertEqual(half.floats[1], -2)
        XCTAssertEqual(half.floats[2], Float(1) / 16_777_216)
        let bf = SafeTensors.Entry(name: "b", dtype: .BF16, shape: [1], bytes: [0x80, 0x3F])
        XCTAssertEqual(bf.floats, [1])
    }
}
