/* banned.h - functions that invite overflows or hidden state; included by
 * every translation unit through the compiler command line (-include).
 * Use snprintf, memcpy with a checked length, strtok_r, fgets. */
#ifndef TITAN_CORE_BANNED_H
#define TITAN_CORE_BANNED_H
#define BANNED(f) sorry_##f##_is_banned_in_titan
#undef strcpy
#define strcpy(...) BANNED(strcpy)
#undef strcat
#define strcat(...) BANNED(strcat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(...) BANNED(strtok)
#undef gets
#define gets(...) BANNED(gets)
#endif
