"""Generated gRPC code for stratafl.proto (regenerate with scripts/gen_proto.sh)."""
