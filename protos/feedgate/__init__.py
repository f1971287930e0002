"""feedgate's public API contract: generated protobuf and gRPC modules under ``feedgate.v1``."""
