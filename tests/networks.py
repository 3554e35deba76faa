"""The networks exercised by several test files, in one place: add a family's small member here and every
family-wide test (build, forward/backward, count, export, training) covers it."""

# one small member of every family and variant, with odd shapes (forward/backward, strategies, counts)
FAMILY_MEMBERS = ["resnet-8", "resnet-11-bottleneck", "wrn-10-2-b131-drop0.3", "multiresnet-8-k2",
                  "multiresnet-11-k2-bottleneck", "postresnet-8", "dvanet-8-K2-w2", "dmrnet-8-K3",
                  "dmrnet-11-K2-bottleneck", "warpnet-13-1", "warpnet-13-1-v2", "warpnet-19-1-K3",
                  "warpnet-19-1-K3-v2", "warpnet-13-1-nobn", "resnet-14-u1.2.3-c8.12.20-proj"]

# one small member of every family and variant the issue lists (+ the sequential WarpNet twin,
# whose fvcore count the warp rule builds on)
EXPORT_MEMBERS = [
    "resnet-14", "resnet-11-bottleneck", "resnet-8-proj", "wrn-10-2-b131-drop0.3", "multiresnet-8-k3",
    "multiresnet-8-k2-w2", "postresnet-8", "dvanet-8-K3", "dmrnet-8-K3", "dmrnet-14-K2-c8",
    "warpnet-13-1", "warpnet-13-1-v2", "warpnet-19-1-K3-v2", "warpnet-13-1-nobn", "warpnet-13-1-K1",
]

# every family's narrow strided 1x1 projections (< 8 input channels): what oneDNN's AVX2 channels_last backward
# corrupts the heap on (tests/train/test_train.py trains each in the CPU defaults)
NARROW_PROJECTION_NETS = ["resnet-8-c4.6.12-proj", "resnet-11-c4.6.12-bottleneck", "multiresnet-8-k2-c6.6.12-proj",
                          "postresnet-8-c6.6.12", "dmrnet-8-K3-c6.14.28", "dvanet-8-K3-c6.14.28",
                          "warpnet-13-1-K2-c6"]
