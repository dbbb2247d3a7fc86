"""What the tests share: apps the client processes load, in-process federations, loopback
servers, hostile peers, network namespaces."""
