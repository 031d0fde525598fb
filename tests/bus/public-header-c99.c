/* The installed header must stand alone in strict C99 (and C++: extern "C"). */
#include <dmabroker.h>

int main(void)
{
	struct dmabroker_alloc_spec spec = {0};

	return (int)spec.size;
}
