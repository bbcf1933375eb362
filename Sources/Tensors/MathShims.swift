#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Thin, inlinable wrappers so other files need not import the C library themselves.
@inline(__always) public func _log(_ x: Double) -> Double { log(x) }
@inline(__always) public func _exp(_ x: Double) -> Double { exp(x) }
@inline(__always) public func _cos(_ x: Double) -> Double { cos(x) }
@inline(__always) public func _expf(_ x: Float) -> Float { expf(x) }
@inline(__always) public func _logf(_ x: Float) -> Float { logf(x) }
@inline(__always) public func _pow(_ x: Double, _ y: Double) -> Double { pow(x, y) }
