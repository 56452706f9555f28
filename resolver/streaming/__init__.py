"""Fetching media from an upstream and relaying it: SSRF guard, redirects, ranges, the stream itself."""
