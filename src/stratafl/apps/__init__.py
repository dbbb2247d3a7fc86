"""Client apps shipped with stratafl: the demo's, and examples to copy for your own."""
