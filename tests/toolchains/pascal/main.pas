program Main;
var
  a, b: Int64;
begin
  ReadLn(a, b);
  WriteLn('Hello, world!');
  WriteLn(a + b);
end.
