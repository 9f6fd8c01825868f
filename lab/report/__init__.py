"""The HTML report of a sweep: build, sections, self-contained HTML, browser check."""
