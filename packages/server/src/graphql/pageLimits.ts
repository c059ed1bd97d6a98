/** Rows a connection (or paged list) returns when `first` is not given. */
export const DEFAULT_PAGE_SIZE = 50;
/** The largest `first` any connection accepts; larger requests are refused, not truncated. */
export const MAX_PAGE_SIZE = 500;
