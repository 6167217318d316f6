/* Which implementation glibc's IFUNC resolvers chose: for each string
 * function, the first 64 bytes of the code `dlsym` resolves it to (the
 * selected variant, not the resolver), in hex. The userland test decodes
 * them on the host. Built by crates/alcazar/tests/userland.rs with the
 * host's C compiler; runs in the guest against Debian's libc6. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

int main(void) {
    const char *names[] = {"strlen", "memchr", "memcpy", "strchr", "memset"};
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        const unsigned char *p = dlsym(RTLD_DEFAULT, names[i]);
        printf("IFUNC %s", names[i]);
        for (int j = 0; p && j < 64; j++)
            printf(" %02x", p[j]);
        printf("\n");
    }
    return 0;
}
