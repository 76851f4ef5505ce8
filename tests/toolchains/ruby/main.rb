a, b = $stdin.read.split.map(&:to_i)
puts "Hello, world!"
puts a + b
