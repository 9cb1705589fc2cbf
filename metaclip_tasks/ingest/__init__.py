"""Common Crawl to pairs: WARC/WAT records framed and scanned (C), image links with their alt-texts,
their language, their uids, de-duplication keys, and the export of a pairs artifact."""
