//! Property tests of the pure limiter state against a brute-force model.
