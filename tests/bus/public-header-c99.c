/* The installed header must stand alone in strict C99 (and C++: extern "C"). */
#include <dmabroker.h>
#include <dmabroker-wire.h>
#include <string.h>

int main(void)
{
	struct dmabroker_alloc_spec spec = {0};
	struct dmabroker_frame frame = {0};
	struct dmabroker_wire_frame wire;

	memset(&wire, 0, sizeof(wire));
	return (int)spec.size + (int)frame.index + (int)wire.index;
}
