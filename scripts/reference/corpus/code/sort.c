#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv) {
	int v[] = {5, -3, 0x1F, 42, 7};
	size_t n = sizeof v / sizeof *v;
	qsort(v, n, sizeof *v, cmp);
	for (size_t i = 0; i < n; ++i) printf("%d%c", v[i], i + 1 < n ? ' ' : '\n');
	return argc > 1 ? atoi(argv[1]) : EXIT_SUCCESS; /* done */
}
