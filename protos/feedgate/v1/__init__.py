"""feedgate.v1: generated from ``protos/feedgate/v1/*.proto`` by ``ops/gen_protos.sh``."""
