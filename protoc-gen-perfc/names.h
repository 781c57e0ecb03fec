/*
 * names.h — protoc-c's naming rules, reproduced exactly, plus C keyword
 * checks. Generated perfc code refers to protoc-c's types and descriptors by
 * name, so these must agree with protobuf-c 1.4.1's c_helpers.cc character
 * for character (tests/generator/test_names.c checks them against protoc-c).
 *
 * Room: protoc-gen-perfc (the generator). Pure string functions; every
 * result is malloc'd and owned by the caller.
 */
#ifndef PERFC_GEN_NAMES_H
#define PERFC_GEN_NAMES_H

/** "GetHTTPUser" -> "get_httpuser": an underscore before an upper-case
 *  letter that follows a non-upper-case character, then lower-case. */
char *perfc__camel_to_lower(const char *name);
/** "GetHTTPUser" -> "GET_HTTPUSER". */
char *perfc__camel_to_upper(const char *name);
/** "in_ner" -> "InNer": drop underscores, upper-case the letter after one
 *  and the first letter. */
char *perfc__to_camel(const char *name);
/** Plain ASCII upper-casing ("x_y" -> "X_Y"). */
char *perfc__to_upper(const char *name);
/** "a.b.GetUser" -> "a__b__get_user" (pieces joined by "__"; a leading dot
 *  is ignored). */
char *perfc__full_name_to_lower(const char *full_name);
/** "a.b.GetUser" -> "A__B__GET_USER". */
char *perfc__full_name_to_upper(const char *full_name);
/** "a.b.get_user" -> "A__B__GetUser", protoc-c's type names. */
char *perfc__full_name_to_c(const char *full_name);
/** Non-zero when `s` is a C11 keyword. */
int perfc__is_c_keyword(const char *s);

#endif /* PERFC_GEN_NAMES_H */
