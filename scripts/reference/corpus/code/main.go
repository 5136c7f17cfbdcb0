package main

import (
	"fmt"
	"strings"
)

func main() {
	words := strings.Fields("  the  quick\tbrown\nfox ")
	for i, w := range words {
		fmt.Printf("%02d: %q\n", i, w)
	}
}
