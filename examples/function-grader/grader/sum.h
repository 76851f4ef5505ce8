/* The interface of the problem: the submission defines this function, the grader calls it. */
long long sum(int n, const long long *a);
