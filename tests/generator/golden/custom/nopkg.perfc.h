/* custom header for nopkg.proto */
/* service Svc: 2 methods */
