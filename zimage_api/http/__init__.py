"""HTTP for every provider: the transport (retries, typed errors, bounded reads), the deadline passed down to it,
the retry policy, and which result URLs may be fetched."""
