use strict;
use warnings;
my ($a, $b) = split ' ', scalar <STDIN>;
print "Hello, world!\n", $a + $b, "\n";
