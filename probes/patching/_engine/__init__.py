"""The private cone engine behind exact patching and swapping."""
